//! Shard-local interior mutability for objects rustls requires to be
//! `Send + Sync`.
//!
//! rustls asks for `Sync` session stores because one config may serve many
//! threads. Here each shard builds its own configs, so a store is only ever
//! touched by the thread that created it. [`ShardLocal`] records that thread
//! and refuses access from any other (returning `None`, never racing), so the
//! hot path needs no lock and no atomic read-modify-write.

use std::cell::RefCell;

thread_local! {
    static THREAD_MARK: u8 = const { 0 };
}

fn thread_token() -> usize {
    THREAD_MARK.with(|m| m as *const u8 as usize)
}

/// A value usable only on the thread that created it.
pub struct ShardLocal<T> {
    owner: usize,
    value: RefCell<T>,
}

// SAFETY: every access to `value` goes through `with`, which checks that the
// caller runs on the owning thread; other threads never observe `value`
// (dropping happens when the last `Arc` is gone, so no access is concurrent).
unsafe impl<T: Send> Sync for ShardLocal<T> {}

impl<T> ShardLocal<T> {
    pub fn new(value: T) -> Self {
        ShardLocal {
            owner: thread_token(),
            value: RefCell::new(value),
        }
    }

    /// Run `f` on the value; `None` when called from a foreign thread or re-entrantly.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if thread_token() != self.owner {
            return None;
        }
        let mut v = self.value.try_borrow_mut().ok()?;
        Some(f(&mut v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn owner_thread_only() {
        let v = Arc::new(ShardLocal::new(5u32));
        assert_eq!(v.with(|x| *x + 1), Some(6));
        let v2 = v.clone();
        let r = std::thread::spawn(move || v2.with(|x| *x)).join().unwrap();
        assert_eq!(r, None);
    }
}
