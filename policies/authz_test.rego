package yatagarasu.authz_test

import data.yatagarasu.authz

test_admin_reads_anything if {
	authz.allow with input as {"jwt_claims": {"roles": ["admin"]}, "key": "finance/q3.pdf", "method": "GET"}
}

test_member_reads_own_department if {
	authz.allow with input as {"jwt_claims": {"department": "finance"}, "key": "finance/q3.pdf", "method": "GET"}
}

test_member_denied_other_department if {
	not authz.allow with input as {"jwt_claims": {"department": "sales"}, "key": "finance/q3.pdf", "method": "GET"}
}

test_prefix_must_end_at_a_segment if {
	not authz.allow with input as {"jwt_claims": {"department": "fin"}, "key": "finance/q3.pdf", "method": "GET"}
}

test_no_claims_denied if {
	not authz.allow with input as {"jwt_claims": {}, "key": "finance/q3.pdf", "method": "GET"}
}
