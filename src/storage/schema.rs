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
    /// `room_id` for global data. Value: `AccountDataRecord` (content, position of its change).
    AccountData,
    /// Event IDs to short event IDs. Key: `event_id`. Value: `u64`.
    EventIds,
    /// Events. Key: short event ID (`u64`). Value: `StoredEvent` (the signed PDU and what the server
    /// knows about it: room, stream position, unsigned extras).
    Events,
    /// `(type, state_key)` pairs to short state keys. Key: `type ++ state_key`. Value: `u64`.
    StateKeys,
    /// Short state keys back to their pair. Key: `u64`. Value: `[type, state_key]`.
    ShortStateKeys,
    /// State snapshots, each a delta on a parent snapshot. Key: snapshot ID (`u64`). Value: binary
    /// `Snapshot` (see `storage::rooms`).
    StateSnapshots,
    /// The state before and after each event. Key: short event ID. Value: two snapshot IDs, binary.
    EventState,
    /// Rooms. Key: `room_id`. Value: `RoomRecord` (short ID, version, current state, extremities).
    Rooms,
    /// Each room's timeline in stream order. Key: short room ID (`u64`) `++` stream position
    /// (`u64`). Value: short event ID (`u64`).
    Timeline,
    /// A user's membership in each room, as the room's current state says. Key:
    /// `user_id ++ room_id`. Value: `MembershipRecord`.
    UserRooms,
    /// A room's members by membership. Key: short room ID (`u64`) `++ user_id`. Value: the
    /// membership (`"join"`, `"invite"`, ...).
    RoomMembers,
    /// Room aliases. Key: `#alias:server`. Value: `AliasRecord`.
    Aliases,
    /// The local aliases of each room. Key: `room_id ++ alias`. Value: empty.
    RoomAliases,
    /// Rooms published in the public room directory. Key: `room_id`. Value: empty.
    PublicRooms,
    /// Results of requests with a transaction ID, for idempotency. Key:
    /// `user_id ++ device_id ++ scope ++ txn_id`, the scope being the request path without the ID.
    /// Value: the result (JSON).
    TransactionIds,
    /// Filters uploaded by clients. Key: `user_id ++ filter_id`. Value: the filter as uploaded.
    Filters,
    /// Account data changes by stream position, for sync. Key: `user_id ++ position`. Value:
    /// `AccountDataChange` (room or none, type). An entry goes when a newer change replaces it.
    AccountDataChanges,
    /// Read receipts. Key: short room ID (`u64`) `++ user_id ++ receipt type ++ thread`. Value:
    /// `ReceiptRecord` (event, timestamp, stream position).
    Receipts,
    /// Receipt changes by stream position, for sync. Key: short room ID `++` position. Value:
    /// `ReceiptChange` (user, type, thread). An entry goes when a newer receipt replaces it.
    ReceiptChanges,
    /// Send-to-device messages waiting for their device. Key: `user_id ++ device_id ++ position`.
    /// Value: `ToDeviceMessage`. Deleted once the device syncs past them.
    ToDevice,
    /// Events that relate to another (`m.relates_to` with a `rel_type`). Key: `target event_id
    /// ++ position` of the relating event. Value: `RelationRecord` (short event, type of relation,
    /// event type, sender).
    Relations,
    /// Thread roots of a room by their latest activity. Key: short room ID `++` position of the
    /// latest reply. Value: the root's short event ID.
    ThreadActivity,
    /// Other servers' signing keys, as fetched from them or from notaries; kept after they expire
    /// to check old events. Key: `server_name ++ key_id`. Value: `StoredServerKey` (the key, until
    /// when it is valid or when it expired, and the signed response it came in, for notary answers).
    ServerKeys,
    /// Results of transactions other servers sent (`/send/{txnId}`), so that a retried
    /// transaction is not processed twice. Key: `origin ++ txn_id`. Value: the per-PDU results
    /// (JSON).
    FederationTransactions,
    /// Invites of local users to rooms this server is not in, as the inviting server sent them.
    /// Key: `user_id ++ room_id`. Value: `RemoteInvite` (the invite event's ID, the room version,
    /// the stripped state to show).
    RemoteInvites,
    /// PDUs waiting to go to another server (`service::federation::sender`). Key: `destination ++
    /// number` (`u64` from `Sequence::Outbound`: a room's events are numbered in their order).
    /// Value: the short event ID (`u64`, binary). Deleted once the destination acknowledged the
    /// transaction carrying it.
    OutboundPdus,
    /// EDUs waiting to go to another server (receipts, to-device messages, device-list updates;
    /// typing and presence are kept in memory only). Key: `destination ++ number` (`u64` from
    /// `Sequence::Outbound`). Value: the EDU (`{"edu_type", "content"}`). Deleted once the
    /// destination acknowledged the transaction carrying it.
    OutboundEdus,
    /// Events waiting to go to an application service (`service::appservice`). Key: `as_id ++
    /// number` (`u64` from `Sequence::Outbound`, so a room's events keep their order). Value: the
    /// short event ID (`u64`, binary). Deleted once the service acknowledged the transaction.
    AppServiceQueue,
    /// Pushers (`service::pushers`): where a user's notifications go. Key: `user_id ++ app_id ++
    /// pushkey`. Value: `PusherRecord` (kind, names, language, data, the device that created it,
    /// `pushkey_ts`).
    Pushers,
    /// Identity keys of devices (end-to-end encryption), as the device uploaded them; signatures
    /// others added are in `KeySignatures`. Key: `user_id ++ device_id`. Value: the signed device
    /// keys object.
    DeviceKeys,
    /// One-time keys waiting to be claimed. Key: `user_id ++ device_id ++ algorithm ++ upload
    /// (u64) ++ key_id`, the upload number growing with each upload of the device, so that keys
    /// are claimed in the order they came. Value: the key (a string or a signed object).
    OneTimeKeys,
    /// Fallback keys, one per device and algorithm. Key: `user_id ++ device_id ++ algorithm`.
    /// Value: `FallbackKeyRecord` (key ID, the key, whether it was claimed).
    FallbackKeys,
    /// Cross-signing keys. Key: `user_id ++ usage` (`master`, `self_signing`, `user_signing`).
    /// Value: the key object as uploaded; signatures others added are in `KeySignatures`.
    CrossSigningKeys,
    /// Signatures uploaded through `/keys/signatures/upload`. Key: `target user_id ++ target key
    /// (a device ID, or a master key's ID) ++ signer user_id`. Value: `{signer key ID: signature}`.
    KeySignatures,
    /// Device-list changes by stream position, for sync, `/keys/changes` and federation. Key:
    /// position (`u64`). Value: `DeviceListChange` (user, device, deleted, and for a signature of
    /// another user's key the one user it concerns). A user's older public entry goes when a newer
    /// one is written.
    DeviceListChanges,
    /// The position of each user's latest public entry in `DeviceListChanges`. Key: `user_id`.
    /// Value: `u64`, binary.
    DeviceListLatest,
    /// Server-side key backup versions. Key: `user_id ++ version (u64)`. Value:
    /// `BackupVersionRecord` (algorithm, auth data, etag).
    BackupVersions,
    /// Backed-up room keys. Key: `user_id ++ version (u64) ++ room_id ++ session_id`. Value: the
    /// `KeyBackupData` object.
    BackupKeys,
    /// Events of a room older than its timeline, fetched from other servers (`/backfill`), in
    /// the order `/messages` reads them back. Key: short room ID `++` number (`u64`, growing
    /// into the past). Value: short event ID (`u64`).
    Backfill,
    /// The media repository: local uploads (and async uploads still waiting for their content)
    /// and cached remote media. Key: `server_name ++ media_id`. Value: `MediaRecord` (content
    /// type, file name, size, uploader, created, SHA-256); the bytes are a file under `media.path`.
    Media,
    /// Thumbnails generated, cached. Key: `server_name ++ media_id ++ width (u64) ++ height (u64)
    /// ++ method`. Value: `ThumbnailRecord` (content type, size); the bytes are a file.
    MediaThumbnails,
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
    pub const ALL: [Column; 48] = [
        Column::Meta,
        Column::Users,
        Column::Devices,
        Column::DeviceLastSeen,
        Column::AccessTokens,
        Column::RefreshTokens,
        Column::Profiles,
        Column::AccountData,
        Column::EventIds,
        Column::Events,
        Column::StateKeys,
        Column::ShortStateKeys,
        Column::StateSnapshots,
        Column::EventState,
        Column::Rooms,
        Column::Timeline,
        Column::UserRooms,
        Column::RoomMembers,
        Column::Aliases,
        Column::RoomAliases,
        Column::PublicRooms,
        Column::TransactionIds,
        Column::Filters,
        Column::AccountDataChanges,
        Column::Receipts,
        Column::ReceiptChanges,
        Column::ToDevice,
        Column::Relations,
        Column::ThreadActivity,
        Column::ServerKeys,
        Column::FederationTransactions,
        Column::RemoteInvites,
        Column::OutboundPdus,
        Column::OutboundEdus,
        Column::AppServiceQueue,
        Column::DeviceKeys,
        Column::OneTimeKeys,
        Column::FallbackKeys,
        Column::CrossSigningKeys,
        Column::KeySignatures,
        Column::DeviceListChanges,
        Column::DeviceListLatest,
        Column::BackupVersions,
        Column::BackupKeys,
        Column::Backfill,
        Column::Media,
        Column::MediaThumbnails,
        Column::Pushers,
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
            Column::EventIds => "event_ids",
            Column::Events => "events",
            Column::StateKeys => "state_keys",
            Column::ShortStateKeys => "short_state_keys",
            Column::StateSnapshots => "state_snapshots",
            Column::EventState => "event_state",
            Column::Rooms => "rooms",
            Column::Timeline => "timeline",
            Column::UserRooms => "user_rooms",
            Column::RoomMembers => "room_members",
            Column::Aliases => "aliases",
            Column::RoomAliases => "room_aliases",
            Column::PublicRooms => "public_rooms",
            Column::TransactionIds => "transaction_ids",
            Column::Filters => "filters",
            Column::AccountDataChanges => "account_data_changes",
            Column::Receipts => "receipts",
            Column::ReceiptChanges => "receipt_changes",
            Column::ToDevice => "to_device",
            Column::Relations => "relations",
            Column::ThreadActivity => "thread_activity",
            Column::ServerKeys => "server_keys",
            Column::FederationTransactions => "federation_transactions",
            Column::RemoteInvites => "remote_invites",
            Column::OutboundPdus => "outbound_pdus",
            Column::OutboundEdus => "outbound_edus",
            Column::AppServiceQueue => "appservice_queue",
            Column::DeviceKeys => "device_keys",
            Column::OneTimeKeys => "one_time_keys",
            Column::FallbackKeys => "fallback_keys",
            Column::CrossSigningKeys => "cross_signing_keys",
            Column::KeySignatures => "key_signatures",
            Column::DeviceListChanges => "device_list_changes",
            Column::DeviceListLatest => "device_list_latest",
            Column::BackupVersions => "backup_versions",
            Column::BackupKeys => "backup_keys",
            Column::Backfill => "backfill",
            Column::Media => "media",
            Column::MediaThumbnails => "media_thumbnails",
            Column::Pushers => "pushers",
        }
    }

    pub fn access(self) -> Access {
        match self {
            Column::Meta
            | Column::Users
            | Column::AccessTokens
            | Column::RefreshTokens
            | Column::EventIds
            | Column::Events
            | Column::StateKeys
            | Column::ShortStateKeys
            | Column::StateSnapshots
            | Column::EventState
            | Column::Rooms
            | Column::Aliases
            | Column::TransactionIds
            | Column::Filters
            | Column::FederationTransactions
            | Column::RemoteInvites
            | Column::DeviceListLatest
            | Column::Media
            | Column::MediaThumbnails => Access::Point,
            Column::Devices
            | Column::DeviceLastSeen
            | Column::Profiles
            | Column::AccountData
            | Column::Timeline
            | Column::UserRooms
            | Column::RoomMembers
            | Column::RoomAliases
            | Column::PublicRooms
            | Column::AccountDataChanges
            | Column::Receipts
            | Column::ReceiptChanges
            | Column::ToDevice
            | Column::Relations
            | Column::ThreadActivity
            | Column::ServerKeys
            | Column::OutboundPdus
            | Column::OutboundEdus
            | Column::AppServiceQueue
            | Column::DeviceKeys
            | Column::OneTimeKeys
            | Column::FallbackKeys
            | Column::CrossSigningKeys
            | Column::KeySignatures
            | Column::DeviceListChanges
            | Column::BackupVersions
            | Column::BackupKeys
            | Column::Backfill
            | Column::Pushers => Access::Scan,
        }
    }
}
