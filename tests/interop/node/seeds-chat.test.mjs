// The chat client of seeds/001 (a browser WebSocket client), run unmodified against `/ws`
// with the `ws` package standing in for the browser's WebSocket class (same
// addEventListener / event.data API). It must show names, never "undefined".
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer } from './server.mjs';

let server;
let url;

before(async () => {
  server = await startServer();
  url = `${server.base.replace('http', 'ws')}/ws`;
});

after(async () => {
  await server?.stop();
});

/// The seed's client code, as the guide writes it; only the URL, the user name and the two
/// display functions (the guide's page helpers) are parameters.
function seedChatClient(address, userName, displayMessage, displayNotification) {
  const ws = new WebSocket(address);

  ws.addEventListener('open', () => {
    console.log('Connected to server');
    ws.send(JSON.stringify({
      type: 'join',
      room: 'general',
      user: userName,
    }));
  });

  ws.addEventListener('message', (event) => {
    const data = JSON.parse(event.data);

    switch (data.type) {
      case 'chat':
        displayMessage(data.user, data.text);
        break;
      case 'user_joined':
        displayNotification(`${data.user} joined the room`);
        break;
      case 'user_left':
        displayNotification(`${data.user} left the room`);
        break;
    }
  });

  ws.addEventListener('close', (event) => {
    console.log(`Disconnected: code=${event.code} reason=${event.reason}`);
  });
  return ws;
}

/// A page: what the seed's display functions would have shown, and a way to wait for it.
function page() {
  const lines = [];
  const waiters = [];
  const show = (line) => {
    lines.push(line);
    for (const w of waiters.splice(0)) w();
  };
  return {
    lines,
    displayMessage: (user, text) => show(`${user}: ${text}`),
    displayNotification: (text) => show(text),
    async until(line) {
      const deadline = Date.now() + 5000;
      while (!lines.includes(line)) {
        if (Date.now() > deadline) throw new Error(`never showed ${JSON.stringify(line)}; showed ${JSON.stringify(lines)}`);
        await new Promise((resolve) => { waiters.push(resolve); setTimeout(resolve, 100); });
      }
    },
  };
}

test('the seeds/001 chat client shows who joined, who said what and who left', async () => {
  const janePage = page();
  const bobPage = page();
  const jane = seedChatClient(url, 'jane_dev', janePage.displayMessage, janePage.displayNotification);
  await new Promise((resolve) => jane.addEventListener('open', resolve));
  // Let jane's join land before bob's (the seed sends it on open).
  await new Promise((r) => setTimeout(r, 200));
  const bob = seedChatClient(url, 'bob', bobPage.displayMessage, bobPage.displayNotification);
  await janePage.until('bob joined the room');
  // The seed's chat message: `{type: 'chat', text}`, no room (it joined one).
  bob.send(JSON.stringify({ type: 'chat', text: 'Hello, Jane!' }));
  await janePage.until('bob: Hello, Jane!');
  await bobPage.until('bob: Hello, Jane!');
  jane.send(JSON.stringify({ type: 'chat', text: 'Hi Bob' }));
  await bobPage.until('jane_dev: Hi Bob');
  bob.close();
  await janePage.until('bob left the room');
  for (const line of [...janePage.lines, ...bobPage.lines]) {
    assert.ok(!line.includes('undefined'), line);
  }
  jane.close();
});
