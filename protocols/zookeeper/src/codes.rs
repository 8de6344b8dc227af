//! Numeric constants of the ZooKeeper protocol: opcodes, KeeperException error
//! codes, create modes, watch event types and states, watcher types, add-watch
//! modes, ACL permission bits and the reserved xids. Each enum converts from
//! the wire `i32` with `TryFrom` and back with `From`/`as i32`; values were
//! checked against ZooKeeper 3.8's `ZooDefs`, `KeeperException.Code`,
//! `CreateMode`, `Watcher` and `ClientCnxn`.

use thiserror::Error;

/// A wire integer that names no variant of the enum it was meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("unknown {what} {value}")]
pub struct UnknownValue {
    /// Which kind of value it was ("opcode", "error code", ...).
    pub what: &'static str,
    /// The integer as read from the wire.
    pub value: i32,
}

/// Declares a `#[repr(i32)]` enum with `TryFrom<i32>` and `From<Enum> for i32`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(i32)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire value.
            pub const fn code(self) -> i32 {
                self as i32
            }
        }

        impl TryFrom<i32> for $name {
            type Error = UnknownValue;

            fn try_from(value: i32) -> Result<Self, UnknownValue> {
                match value {
                    $( v if v == $value => Ok($name::$variant), )+
                    _ => Err(UnknownValue { what: $what, value }),
                }
            }
        }

        impl From<$name> for i32 {
            fn from(v: $name) -> i32 {
                v as i32
            }
        }
    };
}

wire_enum! {
    /// Request type (`RequestHeader.type`, `MultiHeader.type`), from `ZooDefs.OpCode`.
    OpCode, "opcode" {
        /// Used only as a reply type; notifications carry xid -1.
        Notification = 0,
        Create = 1,
        Delete = 2,
        Exists = 3,
        GetData = 4,
        SetData = 5,
        GetAcl = 6,
        SetAcl = 7,
        GetChildren = 8,
        Sync = 9,
        Ping = 11,
        GetChildren2 = 12,
        Check = 13,
        Multi = 14,
        Create2 = 15,
        Reconfig = 16,
        CheckWatches = 17,
        RemoveWatches = 18,
        CreateContainer = 19,
        DeleteContainer = 20,
        CreateTtl = 21,
        MultiRead = 22,
        Auth = 100,
        SetWatches = 101,
        Sasl = 102,
        GetEphemerals = 103,
        GetAllChildrenNumber = 104,
        SetWatches2 = 105,
        AddWatch = 106,
        WhoAmI = 107,
        CreateSession = -10,
        CloseSession = -11,
        /// The type of an error result inside a multi response.
        Error = -1,
    }
}

wire_enum! {
    /// `ReplyHeader.err` and multi error results, from `KeeperException.Code`.
    ErrorCode, "error code" {
        Ok = 0,
        SystemError = -1,
        RuntimeInconsistency = -2,
        DataInconsistency = -3,
        ConnectionLoss = -4,
        MarshallingError = -5,
        Unimplemented = -6,
        OperationTimeout = -7,
        BadArguments = -8,
        UnknownSession = -12,
        NewConfigNoQuorum = -13,
        ReconfigInProgress = -14,
        ApiError = -100,
        NoNode = -101,
        NoAuth = -102,
        BadVersion = -103,
        NoChildrenForEphemerals = -108,
        NodeExists = -110,
        NotEmpty = -111,
        SessionExpired = -112,
        InvalidCallback = -113,
        InvalidAcl = -114,
        AuthFailed = -115,
        SessionMoved = -118,
        NotReadOnly = -119,
        EphemeralOnLocalSession = -120,
        NoWatcher = -121,
        RequestTimeout = -122,
        ReconfigDisabled = -123,
        SessionClosedRequireSaslAuth = -124,
        QuotaExceeded = -125,
        ThrottledOp = -127,
    }
}

wire_enum! {
    /// `CreateRequest.flags`, from `CreateMode`.
    CreateMode, "create mode" {
        Persistent = 0,
        Ephemeral = 1,
        PersistentSequential = 2,
        EphemeralSequential = 3,
        Container = 4,
        PersistentWithTtl = 5,
        PersistentSequentialWithTtl = 6,
    }
}

impl CreateMode {
    /// True for the modes whose node dies with the session.
    pub const fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }

    /// True for the modes that append a 10-digit counter to the name.
    pub const fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        )
    }

    /// True for the modes that carry a TTL (sent with `createTTL`).
    pub const fn is_ttl(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl
        )
    }
}

wire_enum! {
    /// `WatcherEvent.type`, from `Watcher.Event.EventType`.
    EventType, "event type" {
        None = -1,
        NodeCreated = 1,
        NodeDeleted = 2,
        NodeDataChanged = 3,
        NodeChildrenChanged = 4,
        DataWatchRemoved = 5,
        ChildWatchRemoved = 6,
        PersistentWatchRemoved = 7,
    }
}

wire_enum! {
    /// `WatcherEvent.state`, from `Watcher.Event.KeeperState`.
    KeeperState, "keeper state" {
        Unknown = -1,
        Disconnected = 0,
        NoSyncConnected = 1,
        SyncConnected = 3,
        AuthFailed = 4,
        ConnectedReadOnly = 5,
        SaslAuthenticated = 6,
        Expired = -112,
        Closed = 7,
    }
}

wire_enum! {
    /// The `type` of removeWatches / checkWatches, from `Watcher.WatcherType`.
    WatcherType, "watcher type" {
        Children = 1,
        Data = 2,
        Any = 3,
    }
}

wire_enum! {
    /// `AddWatchRequest.mode`, from `ZooDefs.AddWatchModes`.
    AddWatchMode, "add-watch mode" {
        Persistent = 0,
        PersistentRecursive = 1,
    }
}

/// ACL permission bits (`ZooDefs.Perms`).
pub mod perms {
    /// May read data and list children.
    pub const READ: i32 = 1;
    /// May set data.
    pub const WRITE: i32 = 1 << 1;
    /// May create children.
    pub const CREATE: i32 = 1 << 2;
    /// May delete children.
    pub const DELETE: i32 = 1 << 3;
    /// May set the ACL.
    pub const ADMIN: i32 = 1 << 4;
    /// All of the above.
    pub const ALL: i32 = READ | WRITE | CREATE | DELETE | ADMIN;
}

/// Reserved xids (`ClientCnxn`): the server answers these with the same xid.
pub mod xid {
    /// Watch notifications, server to client.
    pub const NOTIFICATION: i32 = -1;
    /// Pings and their replies.
    pub const PING: i32 = -2;
    /// Auth packets and their replies.
    pub const AUTH: i32 = -4;
    /// setWatches / setWatches2 sent while re-establishing a session.
    pub const SET_WATCHES: i32 = -8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_through_i32() {
        for op in OpCode::ALL {
            assert_eq!(OpCode::try_from(op.code()), Ok(*op));
        }
        for e in ErrorCode::ALL {
            assert_eq!(ErrorCode::try_from(i32::from(*e)), Ok(*e));
        }
        for m in CreateMode::ALL {
            assert_eq!(CreateMode::try_from(m.code()), Ok(*m));
        }
    }

    #[test]
    fn documented_values() {
        assert_eq!(ErrorCode::NoNode.code(), -101);
        assert_eq!(ErrorCode::ThrottledOp.code(), -127);
        assert_eq!(ErrorCode::SessionClosedRequireSaslAuth.code(), -124);
        assert_eq!(OpCode::WhoAmI.code(), 107);
        assert_eq!(OpCode::CloseSession.code(), -11);
        assert_eq!(perms::ALL, 31);
    }

    #[test]
    fn unknown_values_are_errors_not_panics() {
        let e = OpCode::try_from(999).unwrap_err();
        assert_eq!(e.to_string(), "unknown opcode 999");
        assert!(ErrorCode::try_from(-9).is_err());
        assert!(ErrorCode::try_from(-126).is_err());
        assert!(CreateMode::try_from(7).is_err());
    }
}
