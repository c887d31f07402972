// The notification both reference servers send: the same fields as a kuzzle-rt document
// notification (PROTOCOL.md §7.4), so that every server sends about as many bytes.
'use strict';

const crypto = require('node:crypto');

const roomIds = new Map();

function roomId(name) {
  let id = roomIds.get(name);
  if (id === undefined) {
    id = crypto.createHash('sha256').update(name).digest('hex');
    roomIds.set(name, id);
  }
  return id;
}

let sequence = 0;

function envelope(room, body) {
  sequence += 1;
  return {
    status: 200,
    error: null,
    index: 'load',
    collection: room,
    controller: 'realtime',
    action: 'publish',
    protocol: 'websocket',
    timestamp: Date.now(),
    volatile: null,
    requestId: `ref-${sequence}`,
    room: roomId(room),
    scope: 'in',
    state: 'done',
    type: 'document',
    event: 'publish',
    node: 'reference',
    result: { _id: null, _source: body },
  };
}

module.exports = { envelope };
