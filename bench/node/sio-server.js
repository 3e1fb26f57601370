// The `node-socketio` peer of the Switchboard bench: the npm `socket.io` server (version
// pinned in package.json / package-lock.json) with the bench's event semantics, the same as
// switchboard's built-in rooms and the `socketioxide` peer
// (src/bin/peer-socketioxide-broadcast.rs), on namespace "/":
//
// * `join_room` "<room>": joins the room; its ack is {"status":"ok","room":"<room>"}
//   ({"status":"error",…} if the room is not a string);
// * `publish` {room, data}: emits `message` with {type: "publish", room, data, userId, user,
//   timestamp, offset, id} (switchboard's fields, so the deliveries are about as long) to
//   every socket in the room, the sender included (`io.to(room)`);
// * `message` <args>: answered with `message-back` <args>; `message-with-ack` <args>:
//   acknowledged with <args> (the Socket.IO conformance events).
//
// Usage: node sio-server.js --listen 127.0.0.1:9001
// Default server options otherwise (websocket and polling transports, no compression:
// socket.io's default `perMessageDeflate: false`), TCP_NODELAY on accepted sockets; `ws`
// masks and unmasks with `bufferutil` (a dependency here, as socket.io's performance notes
// advise; the start line says whether it loaded).
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

function listenAddress(argv) {
  const i = argv.indexOf("--listen");
  const value = i >= 0 ? argv[i + 1] : undefined;
  const match = value && /^\[?([^\]]*)\]?:(\d+)$/.exec(value);
  if (!match) {
    console.error("usage: node sio-server.js --listen HOST:PORT");
    process.exit(2);
  }
  return { host: match[1], port: Number(match[2]) };
}

const { host, port } = listenAddress(process.argv.slice(2));
const httpServer = http.createServer({ noDelay: true });
const io = new Server(httpServer, { serveClient: false });

// Per-room message counters (the deliveries' `offset`), and the id counter.
const offsets = new Map();
let ids = 0;

io.on("connection", (socket) => {
  socket.on("join_room", (room, ack) => {
    if (typeof room !== "string") {
      if (typeof ack === "function") ack({ status: "error", error: "room must be a string" });
      return;
    }
    socket.join(room);
    if (typeof ack === "function") ack({ status: "ok", room });
  });

  socket.on("publish", (message) => {
    if (!message || typeof message.room !== "string") return;
    const room = message.room;
    const offset = (offsets.get(room) || 0) + 1;
    offsets.set(room, offset);
    ids += 1;
    io.to(room).emit("message", {
      type: "publish",
      room,
      data: message.data,
      userId: socket.id,
      user: socket.id,
      timestamp: Date.now(),
      offset,
      id: ids.toString(16).padStart(16, "0"),
    });
  });

  socket.on("message", (...args) => {
    if (typeof args[args.length - 1] === "function") args.pop();
    socket.emit("message-back", ...args);
  });

  socket.on("message-with-ack", (...args) => {
    const ack = args.pop();
    if (typeof ack === "function") ack(...args);
  });
});

httpServer.listen(port, host, () => {
  const address = httpServer.address();
  let bufferutil = "no";
  try {
    require("bufferutil");
    bufferutil = "yes";
  } catch {}
  console.error(
    `node-socketio: socket.io ${require("socket.io/package.json").version} on node ` +
      `${process.version} (bufferutil: ${bufferutil}), listening on ` +
      `${address.address}:${address.port}`,
  );
});
