;; OPA WASM ABI TEST MODULE, not a compiled Rego policy.
;;
;; No `opa` binary can be installed from the registries this project uses, so the in-process
;; authorization path is tested against this hand-written module instead of `opa build -t wasm`
;; output. It implements the parts of OPA's documented wasm ABI (version 1.2) that
;; @open-policy-agent/opa-wasm calls: the ABI version globals, builtins, entrypoints, opa_malloc,
;; opa_json_parse, opa_json_dump, the heap pointer, and the opa_eval fast path. Values are kept as
;; raw JSON text, which is all a one-rule policy needs.
;;
;; Entrypoint 0, "yatagarasu/authz/allow", mirrors policies/authz.rego on the raw input JSON:
;;   allow if the input contains "roles":["admin"  (an admin, as {"roles": ["admin", ...]})
;;   allow if it contains "department":"finance" and "key":"finance/
;; and answers [{"result":true}] or [{"result":false}].
(module
  (import "env" "memory" (memory 2))
  (global $heap (mut i32) (i32.const 1024))
  (global (export "opa_wasm_abi_version") i32 (i32.const 1))
  (global (export "opa_wasm_abi_minor_version") i32 (i32.const 2))

  (data (i32.const 0) "{}\00")
  (data (i32.const 8) "{\"yatagarasu/authz/allow\":0}\00")
  (data (i32.const 64) "[{\"result\":true}]\00")
  (data (i32.const 96) "[{\"result\":false}]\00")
  (data (i32.const 128) "\"roles\":[\"admin\"")
  (data (i32.const 160) "\"department\":\"finance\"")
  (data (i32.const 192) "\"key\":\"finance/")

  (func (export "builtins") (result i32) (i32.const 0))
  (func (export "entrypoints") (result i32) (i32.const 8))
  (func (export "opa_heap_ptr_get") (result i32) (global.get $heap))
  (func (export "opa_heap_ptr_set") (param $p i32) (global.set $heap (local.get $p)))
  (func (export "opa_json_parse") (param $addr i32) (param $len i32) (result i32) (local.get $addr))
  (func (export "opa_json_dump") (param $value i32) (result i32) (local.get $value))

  (func (export "opa_malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (local.get $p))

  ;; 1 when needle (n, nl) occurs in haystack (h, hl), else 0.
  (func $contains (param $h i32) (param $hl i32) (param $n i32) (param $nl i32) (result i32)
    (local $i i32) (local $j i32)
    (block $absent
      (loop $outer
        (br_if $absent (i32.gt_u (i32.add (local.get $i) (local.get $nl)) (local.get $hl)))
        (local.set $j (i32.const 0))
        (block $mismatch
          (loop $inner
            (if (i32.ge_u (local.get $j) (local.get $nl)) (then (return (i32.const 1))))
            (br_if $mismatch
              (i32.ne
                (i32.load8_u (i32.add (local.get $h) (i32.add (local.get $i) (local.get $j))))
                (i32.load8_u (i32.add (local.get $n) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $inner)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (i32.const 0))

  (func (export "opa_eval")
    (param $reserved i32) (param $entrypoint i32) (param $data i32)
    (param $input i32) (param $len i32) (param $heapPtr i32) (param $format i32)
    (result i32)
    (global.set $heap (local.get $heapPtr))
    (if (i32.ne (local.get $entrypoint) (i32.const 0)) (then (return (i32.const 96))))
    (if (call $contains (local.get $input) (local.get $len) (i32.const 128) (i32.const 16))
      (then (return (i32.const 64))))
    (if (i32.and
          (call $contains (local.get $input) (local.get $len) (i32.const 160) (i32.const 22))
          (call $contains (local.get $input) (local.get $len) (i32.const 192) (i32.const 15)))
      (then (return (i32.const 64))))
    (i32.const 96))
)
