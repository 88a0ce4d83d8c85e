// lichen IPC with the AWS IoT Device SDK for JavaScript v2 (aws-iot-device-sdk-v2, tested with
// 1.28.0): the same wire protocol as the Python SDK, checked from a second SDK. Writes
// {"checks": [{name, ok, detail}]} to $LICHEN_IPC_TEST_RESULTS and exits 0 when all pass.
// Needs NODE_PATH pointing at a node_modules holding aws-iot-device-sdk-v2.
const fs = require('fs');
const { greengrasscoreipc } = require('aws-iot-device-sdk-v2');

const RESULTS = process.env.LICHEN_IPC_TEST_RESULTS || 'ipc-js-results.json';
const checks = [];
const rec = (name, ok, detail) => {
  checks.push({ name, ok: !!ok, detail: String(detail || '').slice(0, 400) });
  console.log((ok ? 'PASS ' : 'FAIL ') + name + (ok ? '' : ': ' + detail));
};
const timeout = (p, ms) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error('timeout')), ms))]);

async function check(name, fn) {
  try {
    const r = await fn();
    rec(name, r === undefined || r === true, r);
  } catch (e) {
    rec(name, false, (e && e.stack) || JSON.stringify(e));
  }
}

// The modeled error arrives as `serviceError`, typed by its service-model-type.
async function expectError(name, fn, shape) {
  try {
    await fn();
    rec(name, false, 'call succeeded');
  } catch (e) {
    const detail = JSON.stringify(e.serviceError) + ' ' + (e.serviceError && e.serviceError.constructor && e.serviceError.constructor.name);
    rec(name, detail.includes(shape), detail);
  }
}

async function subscribe(client, topic) {
  const op = client.subscribeToTopic({ topic });
  const first = new Promise((res) => op.on('message', res));
  await op.activate();
  return { op, first };
}

(async () => {
  const client = greengrasscoreipc.createClient();
  await client.connect();
  rec('connect', true);

  await check('pubsub_json_roundtrip', async () => {
    const { op, first } = await subscribe(client, 'lichen/test/js');
    await client.publishToTopic({ topic: 'lichen/test/js', publishMessage: { jsonMessage: { message: { hello: 'js', n: [1, 2] } } } });
    const m = await timeout(first, 5000);
    await op.close();
    return JSON.stringify(m.jsonMessage.message) === '{"hello":"js","n":[1,2]}' && m.jsonMessage.context.topic === 'lichen/test/js' || JSON.stringify(m);
  });
  await check('pubsub_binary_roundtrip', async () => {
    const { op, first } = await subscribe(client, 'lichen/test/jsbin');
    await client.publishToTopic({ topic: 'lichen/test/jsbin', publishMessage: { binaryMessage: { message: Buffer.from([0, 1, 255]) } } });
    const m = await timeout(first, 5000);
    await op.close();
    return Buffer.from(m.binaryMessage.message).equals(Buffer.from([0, 1, 255])) || JSON.stringify(m);
  });
  await check('get_configuration', async () => {
    const cfg = await client.getConfiguration({ keyPath: ['testKey'] });
    return JSON.stringify(cfg.value) === '{"testKey":"hello"}' || JSON.stringify(cfg);
  });
  await check('update_configuration_and_subscribe', async () => {
    const op = client.subscribeToConfigurationUpdate({ keyPath: ['fromJs'] });
    const first = new Promise((res) => op.on('message', res));
    await op.activate();
    await client.updateConfiguration({ keyPath: ['fromJs'], timestamp: new Date(), valueToMerge: { ok: true } });
    const ev = await timeout(first, 5000);
    await op.close();
    const cfg = await client.getConfiguration({ keyPath: ['fromJs'] });
    return (JSON.stringify(cfg.value) === '{"ok":true}' && ev.configurationUpdateEvent.keyPath[0] === 'fromJs')
      || JSON.stringify([cfg, ev]);
  });
  await check('list_components', async () => Array.isArray((await client.listComponents({})).components));
  await expectError('unauthorized', () => client.publishToTopic({ topic: 'forbidden', publishMessage: { jsonMessage: { message: {} } } }), 'UnauthorizedError');
  await expectError('resource_not_found', () => client.getConfiguration({ componentName: 'com.example.Nope', keyPath: [] }), 'ResourceNotFoundError');
  // An error the operation does not declare arrives as a ServiceError naming it.
  await expectError('undeclared_error_as_service_error', () => client.publishToTopic({ topic: 'lichen/test/+', publishMessage: { jsonMessage: { message: {} } } }), 'InvalidArgumentsError');
  await expectError('invalid_arguments', () => client.updateConfiguration({ keyPath: ['accessControl'], timestamp: new Date(), valueToMerge: {} }), 'InvalidArgumentsError');
  await expectError('unsupported', () => client.getSecretValue({ secretId: 'x' }), 'not supported yet');
  await client.close();
})()
  .catch((e) => rec('script', false, (e && e.stack) || JSON.stringify(e)))
  .finally(() => {
    fs.writeFileSync(RESULTS + '.tmp', JSON.stringify({ checks, done: true }));
    fs.renameSync(RESULTS + '.tmp', RESULTS);
    const failed = checks.filter((c) => !c.ok);
    console.log(`${checks.length} checks, ${failed.length} failed`);
    process.exit(failed.length ? 1 : 0);
  });
