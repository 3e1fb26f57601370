// A loopback HTTP proxy for the browser fallback tests, switchable while it runs: it can
// refuse WebSocket upgrades (what a proxy without WebSocket support does) and hold back
// streamed responses (`/events`) until they end (what a buffering proxy does, so a stream
// never shows its first event). Everything else passes through unchanged.
import http from 'node:http';
import net from 'node:net';

/// A proxy in front of `target` (port on 127.0.0.1): {base, port, modes, close()}. `modes`
/// (mutable): {refuseUpgrade, bufferStreams}. Counts what it did in `seen`.
export async function startProxy(target, modes = {}) {
  const state = { refuseUpgrade: false, bufferStreams: false, ...modes };
  const seen = { upgrades: 0, refusedUpgrades: 0, streams: 0, polls: 0, publishes: 0 };
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/events')) seen.streams += 1;
    if (req.url.startsWith('/poll')) seen.polls += 1;
    if (req.url.startsWith('/api/publish')) seen.publishes += 1;
    const upstream = http.request(
      { host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        if (state.bufferStreams && req.url.startsWith('/events')) {
          // Held until the whole body arrived: a stream's never does.
          const chunks = [];
          answer.on('data', (c) => chunks.push(c));
          answer.on('end', () => {
            res.writeHead(answer.statusCode, answer.headers);
            res.end(Buffer.concat(chunks));
          });
          return;
        }
        res.writeHead(answer.statusCode, answer.headers);
        res.flushHeaders();
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req, socket, head) => {
    seen.upgrades += 1;
    if (state.refuseUpgrade) {
      seen.refusedUpgrades += 1;
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    const up = net.connect(target, '127.0.0.1', () => {
      let request = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) request += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(`${request}\r\n`);
      if (head.length) up.write(head);
      socket.pipe(up).pipe(socket);
    });
    sockets.add(up);
    up.on('close', () => { sockets.delete(up); socket.destroy(); });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
    socket.on('close', () => up.destroy());
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    modes: state,
    seen,
    /// Cut every connection through the proxy (streams, polls, WebSockets).
    cutAll() {
      for (const s of sockets) s.destroy();
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
