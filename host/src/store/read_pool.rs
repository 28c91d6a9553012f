//! Reads on behalf of clients (the API's `/api/series` and `/api/decisions`): a few threads,
//! each with its own read-only connection, fed by a bounded queue. A read that finds the queue
//! full, or its client already holding its share of it, is refused at once ([`ReadError::Busy`],
//! a 503 to the client), and so is one that waited [`MAX_WAIT`] for a thread: a flood of reads
//! costs the agent at most the pool's threads, never its scaling. The threads run at a lower CPU
//! priority (nice 10), so on a small machine the control loop and the sampler go first.

use super::{Store, StoreError};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce(&Store) + Send>;
/// Reads queued or running per client address.
type Clients = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The longest a read waits in the queue; after that it is refused rather than served late.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a read was not answered.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the agent is busy with other reads; retry in a moment")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the agent is stopping")]
    Stopped,
}

pub struct ReadPool {
    queue: SyncSender<Job>,
    clients: Clients,
    per_client: usize,
    /// Reads refused because the queue or the client's share was full.
    pub refused: AtomicU64,
}

impl ReadPool {
    /// `threads` readers behind a queue of `queue` reads; one client may hold at most half of
    /// what the pool can take at once (queue and threads), so a second client always finds room.
    pub fn start(store: &Store, threads: usize, queue: usize) -> Result<ReadPool, StoreError> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let (store, rx) = (store.with_own_reader()?, rx.clone());
            std::thread::Builder::new()
                .name(format!("api-read-{i}"))
                .spawn(move || serve(store, rx))
                .map_err(StoreError::Thread)?;
        }
        Ok(ReadPool {
            queue: tx,
            clients: Default::default(),
            per_client: ((queue + threads) / 2).max(1),
            refused: AtomicU64::new(0),
        })
    }

    /// Runs `read` on a pool thread, or refuses it at once when the pool has no room for it.
    pub async fn read<T: Send + 'static>(
        &self,
        client: Option<IpAddr>,
        read: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ReadError> {
        let share = self.take_share(client).ok_or_else(|| self.busy())?;
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, ReadError>>();
        let queued = std::time::Instant::now();
        let job: Job = Box::new(move |store| {
            // A client that has gone, or has waited too long to be served fairly, costs no read.
            let value = if tx.is_closed() || queued.elapsed() > MAX_WAIT {
                Err(ReadError::Busy)
            } else {
                read(store).map_err(ReadError::from)
            };
            // Given back before the answer, so the client's next read finds its place free.
            drop(share);
            let _ = tx.send(value);
        });
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(self.busy()),
            Err(TrySendError::Disconnected(_)) => return Err(ReadError::Stopped),
        }
        let value = rx.await.map_err(|_| ReadError::Stopped)?;
        if matches!(value, Err(ReadError::Busy)) {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        value
    }

    fn busy(&self) -> ReadError {
        self.refused.fetch_add(1, Ordering::Relaxed);
        ReadError::Busy
    }

    fn take_share(&self, client: Option<IpAddr>) -> Option<Share> {
        let Some(ip) = client else { return Some(Share(None)) };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let held = clients.entry(ip).or_default();
        if *held >= self.per_client {
            return None;
        }
        *held += 1;
        Some(Share(Some((ip, self.clients.clone()))))
    }
}

/// A client's place in the pool, given back when its read is done (or dropped unread).
struct Share(Option<(IpAddr, Clients)>);

impl Drop for Share {
    fn drop(&mut self) {
        let Some((ip, clients)) = self.0.take() else { return };
        let mut clients = clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = clients.get_mut(&ip) {
            *held -= 1;
            if *held == 0 {
                clients.remove(&ip);
            }
        }
    }
}

fn serve(store: Store, jobs: Arc<Mutex<Receiver<Job>>>) {
    // SAFETY: plain syscalls on this thread's own id. Nice 10: whatever the clients ask, the
    // scaler's and the sampler's threads run first when the cores are busy.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
    loop {
        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match job {
            Ok(job) => job(&store),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_pool_refuses_at_once_and_a_second_client_still_gets_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let pool = Arc::new(ReadPool::start(&store, 1, 2).unwrap());
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let hold_rx = Arc::new(Mutex::new(hold_rx));
        let flood: IpAddr = "10.0.0.1".parse().unwrap();
        // The flooding client takes its share (half of thread + queue = 1): the read blocks the
        // only thread until released.
        let held = {
            let (pool, hold_rx) = (pool.clone(), hold_rx.clone());
            tokio::spawn(async move {
                pool.read(Some(flood), move |_| {
                    let _ = hold_rx.lock().unwrap().recv();
                    Ok(1)
                })
                .await
            })
        };
        while pool.clients.lock().unwrap().get(&flood).copied() != Some(1) {
            tokio::task::yield_now().await;
        }
        assert!(matches!(pool.read(Some(flood), |_| Ok(2)).await, Err(ReadError::Busy)));
        // Another client queues behind the held read and is answered once it is released.
        let other = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.read(Some("10.0.0.2".parse().unwrap()), |_| Ok(3)).await })
        };
        hold_tx.send(()).unwrap();
        assert_eq!(held.await.unwrap().unwrap(), 1);
        assert_eq!(other.await.unwrap().unwrap(), 3);
        assert_eq!(pool.refused.load(Ordering::Relaxed), 1);
        assert!(pool.clients.lock().unwrap().is_empty(), "shares are given back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_run_on_their_own_connection_and_errors_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let pool = ReadPool::start(&store, 2, 4).unwrap();
        let n = pool.read(None, |s| s.list_series().map(|l| l.len())).await.unwrap();
        assert_eq!(n, 0);
        let e = pool
            .read(None, |s| s.read(|c| c.query_row("SELECT * FROM nowhere", [], |r| r.get::<_, i64>(0))))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
    }
}
