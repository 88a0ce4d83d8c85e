// Drives the stream manager with the real Node.js Stream Manager SDK (npm
// aws-greengrass-core-sdk, its stream-manager client): create, append, read (and a long
// poll), describe, update, list and delete, and the status codes they can reach. Prints one
// JSON object of results. Usage: node streams_sdk.js PORT (the token from
// AWS_CONTAINER_AUTHORIZATION_TOKEN, as the SDK reads it).
const {
    StreamManagerClient, MessageStreamDefinition, StrategyOnFull, Persistence,
    ReadMessagesOptions, ExportDefinition, HTTPConfig,
} = require('aws-greengrass-core-sdk/stream-manager');

const port = parseInt(process.argv[2], 10);
const out = {};

async function code(fn) {
    try {
        await fn();
        return 0;
    } catch (e) {
        // `status` is the SDK's ResponseStatusCode enum object.
        const status = e.status && typeof e.status.asMap === 'function' ? e.status.asMap() : e.status;
        return [e.constructor.name, status === undefined ? null : status];
    }
}

function client() {
    return new Promise((resolve, reject) => {
        // The SDK logs to the console by default: its debug lines go to stderr here, so
        // stdout holds only the results.
        const toStderr = (...a) => process.stderr.write(`${a.join(' ')}\n`);
        const logger = {
            debug: toStderr, info: toStderr, warn: toStderr, error: toStderr,
        };
        const c = new StreamManagerClient({ port, logger });
        c.onConnected(() => resolve(c));
        c.onError(reject);
    });
}

async function main() {
    const c = await client();
    out.list_empty = await c.listStreams();
    const def = new MessageStreamDefinition()
        .withName('J1')
        .withMaxSize(1024)
        .withStreamSegmentSize(1024)
        .withStrategyOnFull(StrategyOnFull.RejectNewData)
        .withPersistence(Persistence.File);
    await c.createMessageStream(def);
    out.create_duplicate = await code(() => c.createMessageStream(def));
    out.seqs = [];
    for (let i = 0; i < 8; i++) {
        out.seqs.push(Number(await c.appendMessage('J1', Buffer.alloc(100, i))));
    }
    out.append_full = await code(() => c.appendMessage('J1', Buffer.alloc(100, 9)));
    const msgs = await c.readMessages('J1', new ReadMessagesOptions()
        .withDesiredStartSequenceNumber(2).withMinMessageCount(3).withMaxMessageCount(4)
        .withReadTimeoutMillis(0));
    out.read = msgs.map((m) => [m.streamName, Number(m.sequenceNumber),
        Buffer.isBuffer(m.payload) && m.payload.equals(Buffer.alloc(100, Number(m.sequenceNumber))),
        Number(m.ingestTime) > 1600000000000]);
    out.read_not_enough = await code(() => c.readMessages('J1', new ReadMessagesOptions()
        .withMinMessageCount(20).withMaxMessageCount(20)));
    const info = await c.describeMessageStream('J1');
    out.describe = [Number(info.storageStatus.oldestSequenceNumber),
        Number(info.storageStatus.newestSequenceNumber), Number(info.storageStatus.totalBytes),
        info.definition.name, Number(info.definition.maxSize),
        info.definition.strategyOnFull.asMap(), info.definition.persistence.asMap()];

    // A long poll answered by an append made while it waits.
    await c.createMessageStream(new MessageStreamDefinition().withName('J2')
        .withStrategyOnFull(StrategyOnFull.OverwriteOldestData).withPersistence(Persistence.Memory));
    const started = Date.now();
    const poll = c.readMessages('J2', new ReadMessagesOptions().withDesiredStartSequenceNumber(0)
        .withMinMessageCount(2).withMaxMessageCount(10).withReadTimeoutMillis(5000));
    await new Promise((r) => setTimeout(r, 300));
    await c.appendMessage('J2', Buffer.from('a'));
    await c.appendMessage('J2', Buffer.from('b'));
    const polled = await poll;
    out.long_poll = [polled.map((m) => m.payload.toString()), (Date.now() - started) / 1000];

    // Update: a larger stream with an http export; persistence may not change.
    const bigger = new MessageStreamDefinition().withName('J1').withMaxSize(4096)
        .withStreamSegmentSize(1024).withStrategyOnFull(StrategyOnFull.RejectNewData)
        .withPersistence(Persistence.File)
        .withExportDefinition(new ExportDefinition().withHttp([
            new HTTPConfig().withIdentifier('h1').withUri('http://127.0.0.1:9/none')]));
    await c.updateMessageStream(bigger);
    out.append_after_update = Number(await c.appendMessage('J1', Buffer.from('more')));
    const updated = await c.describeMessageStream('J1');
    out.updated = [Number(updated.definition.maxSize),
        (updated.exportStatuses || []).map((s) => s.exportConfigIdentifier)];
    out.update_persistence = await code(() => c.updateMessageStream(new MessageStreamDefinition()
        .withName('J1').withMaxSize(4096).withStreamSegmentSize(1024)
        .withStrategyOnFull(StrategyOnFull.RejectNewData).withPersistence(Persistence.Memory)));
    out.update_too_small = await code(() => c.updateMessageStream(new MessageStreamDefinition()
        .withName('J1').withMaxSize(1024).withStreamSegmentSize(2048)
        .withStrategyOnFull(StrategyOnFull.RejectNewData).withPersistence(Persistence.File)));

    out.list = (await c.listStreams()).sort();
    await c.deleteMessageStream('J2');
    out.list_after_delete = await c.listStreams();
    out.describe_missing = await code(() => c.describeMessageStream('J2'));
    out.delete_missing = await code(() => c.deleteMessageStream('J2'));
    out.append_missing = await code(() => c.appendMessage('J2', Buffer.from('x')));
    out.read_missing = await code(() => c.readMessages('J2'));
    c.close();
    process.stdout.write(JSON.stringify(out));
    process.exit(0);
}

main().catch((e) => {
    process.stderr.write(`failed: ${e && e.stack ? e.stack : e}\n${JSON.stringify(out)}\n`);
    process.exit(1);
});
