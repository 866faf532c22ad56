//! Every column family, declared once, with its key layout and what its values hold.
//!
//! Notation: `a ++ b` concatenates; strings are UTF-8 followed by the separator byte `0xFF` (which
//! never occurs in UTF-8, so a string part is unambiguous and a prefix never matches a longer
//! string); `u64` is 8 bytes big-endian, so numeric order is byte order. The functions that build
//! and read these keys are in `storage::key`. Values are JSON unless said otherwise.

/// A RocksDB column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    /// Server-wide values. Key: `name` (string). Value: depends on the name (see `storage::meta`).
    Meta,
    /// Local accounts. Key: `user_id`. Value: `UserRecord`.
    Users,
    /// Devices of local users. Key: `user_id ++ device_id`. Value: `DeviceRecord`.
    Devices,
    /// When and from where each device was last seen. Kept apart from `Devices` because it is
    /// written often and without fsync. Key: `user_id ++ device_id`. Value: `LastSeen`.
    DeviceLastSeen,
    /// Access tokens, by hash; the token itself is never stored. Key: SHA-256 of the token (32
    /// bytes). Value: `AccessTokenRecord`.
    AccessTokens,
    /// Refresh tokens, by hash. Key: SHA-256 of the token (32 bytes). Value: `RefreshTokenRecord`.
    RefreshTokens,
    /// Profile fields (`displayname`, `avatar_url`, `m.tz`, custom keys). Key: `user_id ++ field`.
    /// Value: the field's JSON value.
    Profiles,
    /// Account data, global and per room. Key: `user_id ++ room_id ++ type`, with an empty
    /// `room_id` for global data. Value: the content object.
    AccountData,
}

/// How a column is read, which decides its RocksDB tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Mostly exact-key lookups: bloom filters pay off.
    Point,
    /// Mostly prefix or range scans.
    Scan,
}

impl Column {
    pub const ALL: [Column; 8] = [
        Column::Meta,
        Column::Users,
        Column::Devices,
        Column::DeviceLastSeen,
        Column::AccessTokens,
        Column::RefreshTokens,
        Column::Profiles,
        Column::AccountData,
    ];

    /// The column family's name on disk; never rename one without a migration.
    pub fn name(self) -> &'static str {
        match self {
            Column::Meta => "meta",
            Column::Users => "users",
            Column::Devices => "devices",
            Column::DeviceLastSeen => "device_last_seen",
            Column::AccessTokens => "access_tokens",
            Column::RefreshTokens => "refresh_tokens",
            Column::Profiles => "profiles",
            Column::AccountData => "account_data",
        }
    }

    pub fn access(self) -> Access {
        match self {
            Column::Meta | Column::Users | Column::AccessTokens | Column::RefreshTokens => Access::Point,
            Column::Devices | Column::DeviceLastSeen | Column::Profiles | Column::AccountData => Access::Scan,
        }
    }
}
