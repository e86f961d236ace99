// Errors of the browser client: the protocol's codes travel as they are;
// these are the client's own, for failures the server never saw.

export const CONNECTION_LOST = "CONNECTION_LOST"; // the connection dropped before the reply
export const TIMEOUT = "TIMEOUT"; // no reply within the request's timeout
export const CLOSED = "CLOSED"; // close() was called, or the client gave up
export const UNREACHABLE = "UNREACHABLE"; // no WebSocket could be opened
export const TOO_BIG = "TOO_BIG"; // the server closed with 1009: a frame exceeded max_message_size
export const QUEUE_FULL = "QUEUE_FULL"; // more than maxQueued requests waiting for a connection

/** An error with the protocol's ``code`` (e.g. TOPIC_NOT_FOUND) or a client code. */
export class PubSubError extends Error {
  constructor(code, message, extra = {}) {
    super(`${code}: ${message}`);
    this.name = "PubSubError";
    this.code = code;
    this.detail = message;
    Object.assign(this, extra);
  }
}

/** The PubSubError for a server ``error`` frame. */
export function errorOf(frame) {
  const e = (frame && frame.error) || {};
  return new PubSubError(String(e.code || "INTERNAL"), String(e.message || "request failed"));
}
