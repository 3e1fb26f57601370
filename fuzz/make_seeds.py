#!/usr/bin/env python3
"""Write the committed seed corpus: fuzz/corpus/<target>/seed-*.

Run from anywhere: python3 fuzz/make_seeds.py. Seeds are small, meaningful inputs (RFC 6455 and
RFC 7692 examples, a valid handshake, deflate offers) that give the fuzzer a head start; the
input layout of each target is documented at the top of its fuzz_targets/<target>.rs.
frame_roundtrip seeds are `arbitrary`-encoded and were picked from a fuzzing run instead
(they are not written here; inspect one with `cargo fuzz fmt frame_roundtrip <file>`):
deflate with context takeover and pings between fragments, deflate without context and large
fragmented messages, plain UTF-8 split across fragments with control frames in between, many
messages fed byte by byte, and seed-regression-empty-compressed-messages (consecutive empty
messages compressed with context takeover: the compressor used to send an empty payload).
"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def mask(payload, key=KEY):
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame(opcode, payload, fin=True, rsv1=False, key=KEY):
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n <= 0xFFFF:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    return head + key + mask(payload, key)


def deflate(messages, context=True, wbits=15, level=6):
    """RFC 7692 compression: raw deflate, sync flush, trailer stripped."""
    out, c = [], None
    for m in messages:
        if c is None or not context:
            c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
        z = c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH)
        assert z.endswith(b"\x00\x00\xff\xff")
        out.append(z[:-4])
    return out


HELLO_Z = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])  # RFC 7692 §7.2.3.1
HELLO_Z_CTX = bytes([0xF2, 0x00, 0x11, 0x00, 0x00])  # §7.2.3.2, second "Hello" with context
HELLO_STORED = bytes([0x00, 0x05, 0x00, 0xFA, 0xFF]) + b"Hello" + b"\x00"  # §7.2.3.3

# frame_decoder: [config] [chunking] [client bytes]. config bit 0 = deflate, bits 3-4 = limit.
fd = "frame_decoder"
write(fd, "rfc6455-masked-hello", b"\x00\x00" + frame(0x1, b"Hello"))
write(fd, "masked-hello-bytewise", b"\x00\x01" + frame(0x1, b"Hello"))
write(fd, "fragmented-text-with-ping",
      b"\x00\x05" + frame(0x1, b"Hel", fin=False) + frame(0x9, b"Hello")
      + frame(0x0, b"lo") + frame(0xA, b"") + frame(0x8, struct.pack(">H", 1000) + b"bye"))
write(fd, "utf8-split-across-fragments",
      b"\x00\x03" + frame(0x1, "κό".encode()[:3], fin=False) + frame(0x0, "κόσμε".encode()[3:]))
write(fd, "binary-256-and-64k-header",
      b"\x00\x07" + frame(0x2, bytes(range(256))) + bytes([0x82, 0xFF]) + struct.pack(">Q", 65536) + KEY)
write(fd, "close-1000", b"\x00\x00" + frame(0x8, struct.pack(">H", 1000)))
write(fd, "invalid-utf8", b"\x00\x00" + frame(0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"))
write(fd, "deflate-hello-context-takeover",
      b"\x01\x00" + frame(0x1, HELLO_Z, rsv1=True) + frame(0x1, HELLO_Z_CTX, rsv1=True))
write(fd, "deflate-stored-fragmented",
      b"\x03\x02" + frame(0x2, HELLO_STORED[:4], fin=False, rsv1=True) + frame(0x0, HELLO_STORED[4:]))
bomb = deflate([bytes(200_000)], level=9)[0]
write(fd, "deflate-bomb-over-limit", b"\x01\x00" + frame(0x2, bomb, rsv1=True))
text = ("The quick brown fox jumps over the lazy dog. " * 40).encode()
z1, z2 = deflate([text, text])
write(fd, "deflate-two-messages", b"\x01\x10" + frame(0x1, z1, rsv1=True) + frame(0x1, z2, rsv1=True))

# inflate: [limit] [chunking] [flags] then messages as [u16 BE length][bytes].
def msgs(*ms):
    return b"".join(struct.pack(">H", len(m)) + m for m in ms)

inf = "inflate"
write(inf, "rfc7692-hello", b"\x02\x00\x00" + msgs(HELLO_Z))
write(inf, "rfc7692-hello-context", b"\x02\x03\x01" + msgs(HELLO_Z, HELLO_Z_CTX))
write(inf, "rfc7692-stored", b"\x02\x01\x00" + msgs(HELLO_STORED))
write(inf, "bomb-1mib-limit", b"\x07\x00\x00" + msgs(deflate([bytes(3 << 20)], level=9)[0]))
write(inf, "bomb-64k-limit", b"\x04\x09\x00" + msgs(bomb))
a, b = deflate([text, text[::-1]], wbits=9, level=1)
write(inf, "window-9-context", b"\x05\x40\x01" + msgs(a, b))
final = zlib.compressobj(6, zlib.DEFLATED, -15)
write(inf, "bfinal-stream", b"\x03\x00\x00" + msgs(final.compress(b"Hello") + final.flush()))

# handshake_request: raw request heads.
REQ = (b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
       b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
       b"Sec-WebSocket-Version: 13\r\n")
hr = "handshake_request"
write(hr, "rfc6455-sample", REQ + b"\r\n")
write(hr, "deflate-offer", REQ + b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
write(hr, "browser-like",
      b"GET /ws?room=1 HTTP/1.1\r\nHost: localhost:8080\r\nConnection: keep-alive, Upgrade\r\n"
      b"Pragma: no-cache\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\n"
      b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
      b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; "
      b"client_no_context_takeover, permessage-deflate\r\n\r\n\x81\x80\x00\x00\x00\x00")
write(hr, "version-8", REQ.replace(b"Version: 13", b"Version: 8") + b"\r\n")

# handshake_response: the answer to the RFC sample key.
RESP = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n")
hs = "handshake_response"
write(hs, "rfc6455-sample", RESP + b"\r\n")
write(hs, "protocol-and-deflate",
      RESP + b"Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Extensions: permessage-deflate; "
      b"server_no_context_takeover; client_max_window_bits=10\r\n\r\n\x81\x05Hello")
write(hs, "refused", b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n")

# extensions: [server policy] then the header value.
ex = "extensions"
write(ex, "client-offer", b"\x00permessage-deflate; client_max_window_bits")
write(ex, "all-parameters",
      b"\x3fpermessage-deflate; server_no_context_takeover; client_no_context_takeover; "
      b"server_max_window_bits=10; client_max_window_bits=12")
write(ex, "several-offers-quoted",
      b"\x12permessage-deflate; server_max_window_bits=8, permessage-deflate; foo, "
      b"x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=\"9\"")
write(ex, "server-answer", b"\x00permessage-deflate; server_no_context_takeover; client_no_context_takeover")
