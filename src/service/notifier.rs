//! Wake-ups for waiting syncs, without polling and without misses.
//!
//! Each user with a waiting sync has a watch channel whose value is bumped whenever something for
//! them happens (an event in one of their rooms, account data, a to-device message, typing...).
//! A sync subscribes *before* it reads what to answer; anything that lands after the subscription
//! marks the channel changed, so the wait that follows an empty answer returns at once. Channels
//! exist only while someone waits.

use std::{collections::HashMap, sync::Mutex};

use ruma::{OwnedUserId, UserId};
use tokio::sync::watch;

#[derive(Default)]
pub struct Notifier {
    users: Mutex<HashMap<OwnedUserId, watch::Sender<u64>>>,
}

impl Notifier {
    /// A receiver that changes whenever the user is notified after this call.
    pub fn subscribe(&self, user: &UserId) -> watch::Receiver<u64> {
        let mut users = self.users.lock().expect("notifier lock");
        users.entry(user.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Wakes the user's waiting syncs, if any.
    pub fn notify(&self, user: &UserId) {
        let mut users = self.users.lock().expect("notifier lock");
        if let Some(sender) = users.get(user) {
            if sender.receiver_count() == 0 {
                users.remove(user);
            } else {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    pub fn notify_all<'a>(&self, users: impl IntoIterator<Item = &'a UserId>) {
        let mut table = self.users.lock().expect("notifier lock");
        for user in users {
            if let Some(sender) = table.get(user) {
                if sender.receiver_count() == 0 {
                    table.remove(user);
                } else {
                    sender.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        }
    }

    /// How many users have a waiting sync (for diagnostics).
    pub fn waiting(&self) -> usize {
        self.users.lock().expect("notifier lock").values().filter(|s| s.receiver_count() > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ruma::user_id;

    use super::Notifier;

    #[tokio::test]
    async fn a_notification_after_subscribing_is_never_missed() {
        let notifier = Notifier::default();
        let mut receiver = notifier.subscribe(user_id!("@a:x"));
        receiver.borrow_and_update();
        // It lands between reading and waiting: the wait still sees it.
        notifier.notify(user_id!("@a:x"));
        tokio::time::timeout(Duration::from_millis(100), receiver.changed()).await.unwrap().unwrap();
        // Others' notifications do not wake us.
        notifier.notify(user_id!("@b:x"));
        assert!(tokio::time::timeout(Duration::from_millis(50), receiver.changed()).await.is_err());
    }

    #[tokio::test]
    async fn channels_go_when_nobody_waits() {
        let notifier = Notifier::default();
        drop(notifier.subscribe(user_id!("@a:x")));
        notifier.notify(user_id!("@a:x"));
        assert_eq!(notifier.users.lock().unwrap().len(), 0);
    }
}
