// Jest config for the realm test: run from the repository root with
//   npx jest --config __test__/jest/jest.config.cjs
module.exports = {
  rootDir: __dirname,
  testEnvironment: 'node',
  testMatch: ['<rootDir>/realm.test.js', '<rootDir>/engine.test.js'],
}
