#!/usr/bin/env bash
# An anchor for misses: nginx as a plain relay (proxy_pass, keep-alive upstream, no cache) in front
# of the harness's origin. It is what a miss costs the best C proxy on the same core, so the
# proxy's miss rows can be read against both the origin alone and this. Started by bench/paths.sh
# as a harness target (PORT, ORIGIN_PORT and TARGET_RUN_DIR come from the harness).
set -euo pipefail
dir=$TARGET_RUN_DIR/nginx-relay
mkdir -p "$dir"
cat > "$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
error_log $dir/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi; uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$PORT;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1:$ORIGIN_PORT;
      proxy_set_header Authorization "";
      # Buffered in memory in 64 KiB buffers, as a tuned relay would; never spooled to temp files
      # (unbuffered, nginx reads the origin in proxy_buffer_size pieces, far slower at 10 MiB).
      proxy_buffer_size 64k;
      proxy_buffers 8 64k;
      proxy_busy_buffers_size 128k;
      proxy_max_temp_file_size 0;
    }
  }
}
CONF
nginx=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
exec "$nginx" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
