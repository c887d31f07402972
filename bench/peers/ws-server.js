// A reference server for `kuzzle-load --dialect ws`, on Node's `ws`: JSON messages
// {"sub": room, "id"} and {"pub": room, "body", "id"}, each answered {"id", "ok": true}.
// A publish is serialised once and the same string sent to every member of the room.
// Listens on 127.0.0.1 only; PORT (default 0: any free port) is printed as
// "listening on 127.0.0.1:PORT".
'use strict';

const { WebSocketServer } = require('ws');
const { envelope } = require('./envelope');

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: Number(process.env.PORT || 0),
  perMessageDeflate: false,
  maxPayload: 1024 * 1024,
});
const rooms = new Map();

wss.on('connection', (socket) => {
  const joined = new Set();
  socket.on('message', (data) => {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof message.sub === 'string') {
      let room = rooms.get(message.sub);
      if (room === undefined) {
        room = new Set();
        rooms.set(message.sub, room);
      }
      room.add(socket);
      joined.add(message.sub);
      socket.send(JSON.stringify({ id: message.id, ok: true }));
    } else if (typeof message.pub === 'string') {
      const room = rooms.get(message.pub);
      if (room !== undefined) {
        const notification = JSON.stringify(envelope(message.pub, message.body));
        for (const member of room) member.send(notification);
      }
      socket.send(JSON.stringify({ id: message.id, ok: true }));
    }
  });
  socket.on('close', () => {
    for (const name of joined) {
      const room = rooms.get(name);
      room.delete(socket);
      if (room.size === 0) rooms.delete(name);
    }
  });
});

wss.on('listening', () => console.log(`listening on 127.0.0.1:${wss.address().port}`));
process.on('SIGTERM', () => process.exit(0));
