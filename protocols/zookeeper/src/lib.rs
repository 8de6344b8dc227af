//! Concord's ZooKeeper dialect. The wire codec ([`frame`], [`jute`], [`records`],
//! [`message`], [`codes`]) is pure functions from bytes to typed records and back, with
//! no sockets, no kernel and no async. The server side is apart from it: [`server`] (the
//! adapter), `connection` (sessions and request order), `ops` (requests against the
//! kernel), `watches`, `acl` and `four_letter`.
//!
//! Layers, bottom up:
//! - [`frame`]: 4-byte big-endian length-prefixed frames, a streaming splitter
//!   with the jute.maxbuffer limit, four-letter-word detection;
//! - [`jute`]: the jute binary primitives (int, long, boolean, buffer,
//!   ustring, vector) as nom parsers and writers;
//! - [`records`]: every jute record the client protocol uses;
//! - [`message`]: requests and replies by opcode, multi op/result lists,
//!   connect handshake;
//! - [`codes`]: opcodes, error codes and the other protocol enums.
//!
//! Decoding a connection's traffic: split frames with [`FrameSplitter`]; the
//! first body is a [`ConnectRequest`] ([`decode_connect_request`]); every later
//! one is a request ([`decode_request`]). Replies are built with
//! [`encode_connect_response`], [`encode_reply`] and [`encode_notification`].

mod acl;
pub mod codes;
mod connection;
pub mod error;
mod four_letter;
pub mod frame;
pub mod jute;
pub mod message;
mod ops;
pub mod records;
pub mod server;
mod watches;

#[cfg(test)]
mod captures;

pub use codes::{
    AddWatchMode, CreateMode, ErrorCode, EventType, KeeperState, OpCode, UnknownValue, WatcherType,
};
pub use error::{DecodeError, FrameError, JuteFault};
pub use frame::{
    DEFAULT_MAX_FRAME, FrameBuffer, FrameSplitter, Split, encode_frame, four_letter_word,
};
pub use message::{
    MultiOp, MultiResult, Request, Response, decode_connect_request, decode_connect_response,
    decode_reply, decode_request, encode_connect_request, encode_connect_response,
    encode_notification, encode_reply, encode_request,
};
pub use records::{
    Acl, ClientInfo, ConnectRequest, ConnectResponse, Id, Record, ReplyHeader, RequestHeader, Stat,
    WatcherEvent,
};
pub use server::{ZookeeperAdapter, ZookeeperOptions};
