# Authorization policy for yatagarasu (Rego v1).
# Input (see docs/authentication.md):
#   {"jwt_claims": {...}, "bucket": "<bucket name>", "path": "/<prefix>/<key>",
#    "key": "<decoded object key>", "method": "GET", "client_ip": "203.0.113.7"}
# Admins read everything; everyone else reads only under their department's prefix
# (key "<department>/...").
package yatagarasu.authz

default allow := false

allow if "admin" in input.jwt_claims.roles

allow if {
	input.method in {"GET", "HEAD"}
	department := input.jwt_claims.department
	is_string(department)
	department != ""
	startswith(input.key, concat("", [department, "/"]))
}
