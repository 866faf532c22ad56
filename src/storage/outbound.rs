//! The outbound federation queues (`OutboundPdus`, `OutboundEdus`): what waits to be sent to each
//! destination, kept until the destination acknowledges it.

use serde_json::value::RawValue;

use super::{Batch, Column, Storage, StorageError, key, sequence::decode_u64};

/// A queued PDU: its number in the queue and the event's short ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuedPdu {
    pub number: u64,
    pub short_event: u64,
}

/// A queued EDU: its number in the queue and the EDU (`{"edu_type", "content"}`).
#[derive(Clone, Debug)]
pub struct QueuedEdu {
    pub number: u64,
    pub edu: Box<RawValue>,
}

impl Storage {
    /// The oldest `limit` PDUs queued for `destination` with numbers from `from` on. Starting
    /// above what was already sent and deleted skips its tombstones, which a scan from the start
    /// of the queue would have to step over until compactions drop them.
    pub fn outbound_pdus(&self, destination: &str, from: u64, limit: usize) -> Result<Vec<QueuedPdu>, StorageError> {
        self.engine
            .scan_from(Column::OutboundPdus, &key::outbound_prefix(destination), &key::outbound(destination, from))
            .take(limit)
            .map(|entry| {
                let (k, v) = entry?;
                Ok(QueuedPdu { number: key::outbound_parts(&k)?.1, short_event: decode_u64(&v)? })
            })
            .collect()
    }

    /// The oldest `limit` EDUs queued for `destination` with numbers from `from` on.
    pub fn outbound_edus(&self, destination: &str, from: u64, limit: usize) -> Result<Vec<QueuedEdu>, StorageError> {
        self.engine
            .scan_from(Column::OutboundEdus, &key::outbound_prefix(destination), &key::outbound(destination, from))
            .take(limit)
            .map(|entry| {
                let (k, v) = entry?;
                let edu = String::from_utf8(v)
                    .ok()
                    .and_then(|json| RawValue::from_string(json).ok())
                    .ok_or_else(|| StorageError::Corrupt("outbound_edus: not JSON".into()))?;
                Ok(QueuedEdu { number: key::outbound_parts(&k)?.1, edu })
            })
            .collect()
    }

    /// Every destination with something queued, PDUs or EDUs. Reads one key per destination.
    pub fn outbound_destinations(&self) -> Result<Vec<String>, StorageError> {
        let mut destinations = std::collections::BTreeSet::new();
        for column in [Column::OutboundPdus, Column::OutboundEdus] {
            let mut start = Vec::new();
            loop {
                let Some(entry) = self.engine.scan_from(column, b"", &start).next() else { break };
                let (k, _) = entry?;
                let destination = key::outbound_parts(&k)?.0;
                start = key::outbound_after(destination);
                destinations.insert(destination.to_owned());
            }
        }
        Ok(destinations.into_iter().collect())
    }
}

impl Batch {
    /// Queues an event for `destination` under `pdu.number` (from `Sequence::Outbound`).
    pub fn queue_outbound_pdu(&mut self, destination: &str, pdu: QueuedPdu) {
        let value = pdu.short_event.to_be_bytes().to_vec();
        self.put(Column::OutboundPdus, key::outbound(destination, pdu.number), value);
    }

    /// Queues an EDU for `destination` under `number` (from `Sequence::Outbound`).
    pub fn queue_outbound_edu(&mut self, destination: &str, number: u64, edu: &RawValue) {
        self.put(Column::OutboundEdus, key::outbound(destination, number), edu.get().as_bytes().to_vec());
    }

    /// Removes a PDU from a destination's queue (once the destination has it).
    pub fn dequeue_outbound_pdu(&mut self, destination: &str, number: u64) {
        self.delete(Column::OutboundPdus, key::outbound(destination, number));
    }

    /// Removes an EDU from a destination's queue.
    pub fn dequeue_outbound_edu(&mut self, destination: &str, number: u64) {
        self.delete(Column::OutboundEdus, key::outbound(destination, number));
    }
}

impl Storage {
    /// The oldest `limit` events queued for the application service `id`, numbers from `from` on.
    pub fn appservice_queue(&self, id: &str, from: u64, limit: usize) -> Result<Vec<QueuedPdu>, StorageError> {
        self.engine
            .scan_from(Column::AppServiceQueue, &key::outbound_prefix(id), &key::outbound(id, from))
            .take(limit)
            .map(|entry| {
                let (k, v) = entry?;
                Ok(QueuedPdu { number: key::outbound_parts(&k)?.1, short_event: decode_u64(&v)? })
            })
            .collect()
    }
}

impl Batch {
    /// Queues an event for the application service `id` under `pdu.number` (from `Sequence::Outbound`).
    pub fn queue_appservice_event(&mut self, id: &str, pdu: QueuedPdu) {
        self.put(Column::AppServiceQueue, key::outbound(id, pdu.number), pdu.short_event.to_be_bytes().to_vec());
    }

    /// Removes an event from an application service's queue (once the service has it).
    pub fn dequeue_appservice_event(&mut self, id: &str, number: u64) {
        self.delete(Column::AppServiceQueue, key::outbound(id, number));
    }
}
