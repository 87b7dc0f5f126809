// `prepack` of each npm/<platform>/ package: refuses to pack one without its binary (npm
// would otherwise pack the package.json alone, which installs fine and loads nothing).
import fs from 'node:fs'

const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'))
const missing = pkg.files.filter((f) => !fs.existsSync(f))
if (missing.length > 0) {
  console.error(
    `${pkg.name}: ${missing.join(', ')} missing. Build it first: \`npm run build:platform\` at the ` +
      'repository root on this platform, or the release workflow for the others.',
  )
  process.exit(1)
}
