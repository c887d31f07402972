// A reference server for `kuzzle-load --dialect socketio`, on Socket.IO (WebSocket
// transport only): events sub(room, ack) and pub(room, body, ack); a publish is one
// `io.to(room).emit("n", notification)`, which Socket.IO encodes once for the room.
// Listens on 127.0.0.1 only; PORT (default 0: any free port) is printed as
// "listening on 127.0.0.1:PORT". Engine.IO's heartbeat is set to 10 minutes: the load
// tool does not read its thousands of idle sockets, so it could not answer in time.
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');
const { envelope } = require('./envelope');

const server = http.createServer();
const io = new Server(server, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  pingInterval: 600000,
  pingTimeout: 600000,
});

io.on('connection', (socket) => {
  socket.on('sub', (room, ack) => {
    socket.join(String(room));
    if (typeof ack === 'function') ack(true);
  });
  socket.on('pub', (room, body, ack) => {
    io.to(String(room)).emit('n', envelope(String(room), body));
    if (typeof ack === 'function') ack(true);
  });
});

server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
