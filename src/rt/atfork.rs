//! What a fork must hold: `pthread_atfork` as a trait.
//!
//! Only the forking thread exists in a forked child, so a mutex another thread held at the
//! moment of the fork would stay locked there for ever, and state that describes the parent's
//! other threads (waiters in line, running tasks) would describe threads that are not there.
//! Each piece of process-wide state parrun keeps implements [`ForkSafe`]; `crate::rt::fork`
//! takes every guard it is given just before forking ([`ForkSafe::hold`]), lets go of them in the
//! parent (dropping the [`ForkHeld`]), and resets them in the child
//! ([`ForkHeld::reset_in_child`]).

/// State that must be consistent in a forked child: its locks are held across the fork.
pub(crate) trait ForkSafe: Send + Sync {
    /// Takes this state's locks, on the thread about to fork.
    fn hold(&self) -> Box<dyn ForkHeld + '_>;
}

/// The locks of a [`ForkSafe`] state, held across a fork; dropping them releases them (in the
/// parent as in the child).
pub(crate) trait ForkHeld {
    /// In the child, whose only thread is the forking one: makes the state describe the child
    /// (no other thread, no waiter, none of the parent's children), then releases the locks.
    fn reset_in_child(self: Box<Self>);
}

/// Empties, in a forked child, a list of the parent's things without dropping them: a drop
/// writes to each (a count, the allocator's free list), and every page written is copied from
/// the parent's (a `Pool` made after 200 others, whose handles the collector had not freed
/// yet, took about 18 µs more in each worker to drop their entries). Left alone, they stay
/// shared.
pub(crate) fn forget_in_child<T>(list: &mut Vec<T>) {
    std::mem::forget(std::mem::take(list));
}
