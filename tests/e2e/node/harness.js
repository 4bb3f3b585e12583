// Runs the specification's PRSMEventHandler exactly as the spec prints it
// (prsm-event-handler.js is a verbatim copy) and writes every event it emits as a JSON line.
//
// The spec leaves three of the methods it calls undefined (notifyDownstreamServices,
// logFailure, generateCorrelationId); they are filled in here as no-ops on the instance,
// without touching the spec's code, so that its own updateUserMetrics and triggerFallback run.
import handler from './prsm-event-handler.js';

handler.notifyDownstreamServices = () => {};
handler.logFailure = () => {};
handler.generateCorrelationId = () => 'node-generated';

for (const name of ['query:completed', 'query:failed']) {
  handler.on(name, (data) => {
    process.stdout.write(JSON.stringify({ event: name, data }) + '\n');
  });
}
// Subscribing again to the same channels is a no-op that resolves once Redis confirms them.
await handler.subscriber.subscribe('prsm:query:completed', 'prsm:query:failed');
process.stdout.write(JSON.stringify({ event: 'ready' }) + '\n');
