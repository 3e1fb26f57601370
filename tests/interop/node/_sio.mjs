import { io } from 'socket.io-client';
const port = process.argv[2]; const transports = process.argv[3].split(',');
const a = io(`http://127.0.0.1:${port}`, { transports, auth: { token: 'x' } });
const b = io(`http://127.0.0.1:${port}/chat`, { transports });
a.on('auth', (p) => console.log('a auth', p));
a.on('connect', async () => {
  console.log('a connected', a.id, a.io.engine.transport.name);
  console.log('join', await a.emitWithAck('join_room', 'general'));
  console.log('echo', await a.emitWithAck('message-with-ack', 1, 'two', { three: 3 }));
  a.emit('message', 'hi', Buffer.from([1,2]));
  const go = async () => {
    console.log('b join', await b.emitWithAck('join_room', 'general'));
    console.log('a chat ack', await a.emitWithAck('chat_message', { room: 'general', message: 'Hello everyone!' }));
    b.emit('typing', 'general');
    console.log('bad', await a.emitWithAck('chat_message', { message: 'no room' }));
    await fetch(`http://127.0.0.1:${port}/api/publish`, { method: 'POST', headers: { authorization: 'Bearer k', 'content-type': 'application/json' }, body: JSON.stringify({ room: 'general', data: { from: 'api' } }) });
  };
  if (b.connected) go(); else b.on('connect', go);
});
a.on('message-back', (...args) => console.log('a message-back', args));
for (const [n, s] of [['a', a], ['b', b]]) {
  for (const ev of ['chat_message', 'message', 'user_joined', 'user_typing', 'error']) s.on(ev, (...args) => console.log(n, ev, JSON.stringify(args)));
  s.on('connect_error', (e) => console.log(n, 'connect_error', e.message));
}
setTimeout(() => { a.close(); b.close(); }, 1500);
