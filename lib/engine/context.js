'use strict'
// Where workflow and step code finds its engine context: one AsyncLocalStorage for the
// workflow body (the run's execution) and one for a step attempt (its metadata and
// stream ops).

const { AsyncLocalStorage } = require('node:async_hooks')

const workflowStore = new AsyncLocalStorage()
const stepStore = new AsyncLocalStorage()

module.exports = { workflowStore, stepStore }
