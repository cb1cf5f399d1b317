// The Python that has Debian's packages (python3-boto3, awscli's botocore): /usr/bin/python3, not
// whatever `python3` comes first on PATH (a pyenv shim sees none of them).
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'

export const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'

/** Throws, naming the Debian package, when boto3 cannot be imported (tests fail, never skip). */
export function requireBoto3(): void {
  try {
    execFileSync(PYTHON, ['-c', 'import boto3'], { stdio: 'ignore' })
  } catch {
    throw new Error(`boto3 is not importable by ${PYTHON}: install Debian's python3-boto3 (.ci/run does)`)
  }
}
