'use strict'
// Where workflow and step code finds its engine context: one AsyncLocalStorage for the
// workflow body (the run's execution) and one for a step attempt (its metadata and
// stream ops).

const { AsyncLocalStorage } = require('node:async_hooks')

const workflowStore = new AsyncLocalStorage()
const stepStore = new AsyncLocalStorage()

/** The declared steps by id: a step function inside a value (a method's receiver, say)
 * comes back as the declared one (it runs as a step in a workflow body, as itself in a step). */
const declaredSteps = new Map()

module.exports = { workflowStore, stepStore, declaredSteps }
