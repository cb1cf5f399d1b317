// Preloaded (`--import`) into a proxy process by a test: appends each package the process loads
// (bare specifiers, once each) to the file named by RECORD_IMPORTS_TO.
import { appendFileSync } from 'node:fs'
import { registerHooks } from 'node:module'

const file = process.env.RECORD_IMPORTS_TO
const seen = new Set<string>()
if (file !== undefined) {
  registerHooks({
    resolve(specifier, context, next) {
      if (!/^(\.|\/|node:|file:|data:)/.test(specifier) && !seen.has(specifier)) {
        seen.add(specifier)
        appendFileSync(file, `${specifier}\n`)
      }
      return next(specifier, context)
    },
  })
}
