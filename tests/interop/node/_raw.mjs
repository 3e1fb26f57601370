import WebSocket from 'ws';
const ws = new WebSocket(`ws://127.0.0.1:${process.argv[2]}/socket.io/?EIO=4&transport=websocket`);
const send = (m) => { console.log('>', m); ws.send(m); };
ws.on('message', (d, bin) => console.log('<', bin ? d : d.toString()));
ws.on('open', () => {
  setTimeout(() => send('40/chat,'), 50);
  setTimeout(() => send('42/chat,0["join_room","general"]'), 150);
  setTimeout(() => send('42/chat,1["chat",{"room":"general","x":1}]'), 250);
  setTimeout(() => send('42/chat,["typing","general"]'), 300);
  setTimeout(() => ws.close(), 600);
});
ws.on('close', (c) => console.log('closed', c));
