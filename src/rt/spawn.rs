//! How parrun starts its OS threads ([`Builder`]: plain POSIX threads, safe to start in a
//! forked child), keeps them ([`Handle`]: one a forked child may drop), names and tells them
//! apart ([`current_name`], [`current_id`]), reuses the ones that run parrun's own work
//! ([`run_service`]), and the allocator gate a fork holds ([`hold_for_fork`]). Imports nothing of parrun's but `poison`, so that every other module
//! can start threads.

use crate::rt::poison::Recover;

/// Starts parrun's threads: as `std::thread::Builder`, but the thread is a plain POSIX thread
/// that std's thread machinery never sees.
///
/// std registers every thread it starts, and unregisters it as it ends, in a table behind a
/// process-wide lock (its stack-overflow handler's `thread_info`). A forked child has only the
/// forking thread, so if another thread of the parent held that lock at the moment of the
/// fork, it stays locked in the child for ever, and the child's first `std::thread` start (a
/// link reader, a script thread, a pool of its own) blocked for good: seen as a forked worker
/// that hangs about once in a few hundred forks while the parent starts and ends threads (its
/// link servers and pool writers start as the next worker is forked). A thread made here takes
/// no lock that another thread can hold at a fork except glibc's own, which glibc resets in
/// the child; the thread runs without std's stack-overflow message (an overflow still ends the
/// process, with SIGSEGV) and its `std::thread::current()` is unnamed: [`current_name`] names
/// it, [`current_id`] identifies it.
#[derive(Default)]
pub(crate) struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

/// The stack of a thread started without a size, as std's default.
const DEFAULT_STACK: usize = 2 << 20;

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Taken (shared) by a thread of parrun while the allocator sets up its state for the thread
/// and from the end of its work until it has ended, and (exclusive) by the thread about to
/// fork ([`hold_for_fork`]).
///
/// mimalloc (the binary's allocator) sets up a thread's heap at its first allocation and, as
/// the thread ends, hands its pages over to the other threads, in steps no fork handler guards
/// (v3 also under a lock, `theaps_lock`): a fork in the middle of one left it half done in the
/// child, whose next thread then waited for ever at its first allocation (seen in about one run
/// in two of a script that forks pool workers calling a parent's Queue while its own threads
/// start and end).
static ALLOCATOR_GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

thread_local! {
    static EXIT_GATE: ExitGate = const { ExitGate };
}

/// Takes the thread's [`ALLOCATOR_GATE`] as it ends, once its other thread-locals are gone
/// (they may drop anything, which must not wait for a fork under way), for the allocator's
/// thread-exit hook: a pthread key's destructor, after which a key made later (at the
/// allocator's load, before `main`) lets go of it, as glibc runs them in the order they were
/// made.
struct ExitGate;

impl Drop for ExitGate {
    fn drop(&mut self) {
        if let Some(key) = gate_key() {
            let guard = Box::new(ALLOCATOR_GATE.read().recover());
            // SAFETY: the key's destructor takes the guard back, on this thread, as it ends.
            unsafe { nix::libc::pthread_setspecific(key, Box::into_raw(guard).cast()) };
        }
    }
}

/// The pthread key whose destructor lets go of a thread's [`ALLOCATOR_GATE`] as it ends.
fn gate_key() -> Option<nix::libc::pthread_key_t> {
    static KEY: std::sync::OnceLock<Option<nix::libc::pthread_key_t>> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| {
        let mut key: nix::libc::pthread_key_t = 0;
        // SAFETY: a new key with a destructor that takes only what `thread_main` put there.
        (unsafe { nix::libc::pthread_key_create(&mut key, Some(release_gate)) } == 0).then_some(key)
    })
}

unsafe extern "C" fn release_gate(guard: *mut std::ffi::c_void) {
    // SAFETY: `thread_main` stored a boxed read guard, on this thread.
    drop(unsafe { Box::from_raw(guard.cast::<std::sync::RwLockReadGuard<'static, ()>>()) });
}

/// Keeps every thread of parrun out of the allocator's thread set-up and tear-down until the
/// guard is dropped: hold it across a fork.
pub(crate) fn hold_for_fork() -> std::sync::RwLockWriteGuard<'static, ()> {
    ALLOCATOR_GATE.write().recover()
}

thread_local! {
    /// The id [`Builder::spawn`] gave this thread (0: a thread parrun did not start so).
    static ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static NAME: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The calling thread's id, unique in the process for its whole life: the one its
/// [`Handle::id`] gives, or 0 for a thread not started by [`Builder`] (the main thread).
pub(crate) fn current_id() -> u64 {
    ID.with(|id| id.get())
}

/// The name the calling thread was started with (std's name for a thread std started).
pub(crate) fn current_name() -> Option<String> {
    NAME.with(|n| n.borrow().clone())
        .or_else(|| std::thread::current().name().map(str::to_owned))
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder::default()
    }

    pub(crate) fn name(mut self, name: String) -> Self {
        self.name = Some(name);
        self
    }

    pub(crate) fn stack_size(mut self, size: usize) -> Self {
        self.stack_size = Some(size);
        self
    }

    /// Starts a thread running `f`, as `std::thread::Builder::spawn`.
    pub(crate) fn spawn<T: Send + 'static>(
        self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<Handle<T>> {
        use nix::libc;
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let packet = std::sync::Arc::new(Packet(std::cell::UnsafeCell::new(None)));
        let theirs = packet.clone();
        let name = self.name;
        let main: Box<dyn FnOnce() + Send> = Box::new(move || {
            ID.with(|i| i.set(id));
            if let Some(name) = &name {
                set_os_name(name);
                NAME.with(|n| *n.borrow_mut() = Some(name.clone()));
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            // SAFETY: the only write; the handle reads it once this thread has ended (joined),
            // and `is_finished` only counts the references.
            unsafe { *theirs.0.get() = Some(result) };
            drop(theirs);
        });
        let main = Box::into_raw(Box::new(main));
        let page = page_size();
        let stack = self
            .stack_size
            .unwrap_or(DEFAULT_STACK)
            .max(libc::PTHREAD_STACK_MIN)
            .next_multiple_of(page);
        // SAFETY: the attributes are initialised before use and destroyed after; `main` is
        // handed to the thread, or taken back if it could not start.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            let mut code = libc::pthread_attr_init(&mut attr);
            if code == 0 {
                code = libc::pthread_attr_setstacksize(&mut attr, stack);
            }
            let mut native: libc::pthread_t = 0;
            if code == 0 {
                code = libc::pthread_create(&mut native, &attr, thread_main, main.cast());
            }
            libc::pthread_attr_destroy(&mut attr);
            if code != 0 {
                drop(Box::from_raw(main));
                return Err(std::io::Error::from_raw_os_error(code));
            }
            Ok(Handle {
                native,
                packet,
                id,
                pid: crate::rt::pid::current_pid(),
            })
        }
    }
}

/// Where a thread leaves its result (or its panic) for [`Handle::join`].
struct Packet<T>(std::cell::UnsafeCell<Option<std::thread::Result<T>>>);

// SAFETY: written once by the thread before it drops its reference, read by the joiner after
// the thread has ended.
unsafe impl<T: Send> Sync for Packet<T> {}

extern "C" fn thread_main(main: *mut std::ffi::c_void) -> *mut std::ffi::c_void {
    // SAFETY: `Builder::spawn` passes a boxed `Box<dyn FnOnce() + Send>` and gives it up.
    let main = unsafe { Box::from_raw(main.cast::<Box<dyn FnOnce() + Send>>()) };
    // The first thread-local destructor registered, so the last to run as the thread ends.
    EXIT_GATE.with(|_| ());
    {
        let _gate = ALLOCATOR_GATE.read().recover();
        // The thread's first allocation sets up the allocator's state for it.
        drop(std::hint::black_box(Box::new(0u8)));
    }
    // (The closure catches the body's panics; nothing may unwind into C.)
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(main)).is_err() {
        std::process::abort();
    }
    std::ptr::null_mut()
}

/// Names the OS thread (what `ps`, `top` and a debugger show), as std does: its first 15 bytes.
fn set_os_name(name: &str) {
    let mut bytes: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
    bytes.push(0);
    if let Ok(name) = std::ffi::CStr::from_bytes_with_nul(&bytes) {
        let _ = nix::sys::prctl::set_name(name);
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) };
    usize::try_from(page).unwrap_or(4096).max(1)
}

/// A thread started by [`Builder`], as `JoinHandle`: joined, or detached when dropped; and only
/// ever by the process that started it.
///
/// A forked child inherits its parent's handles (in a pool, a script thread, a process object)
/// but not their threads, and glibc hands the stacks of the parent's other threads to its cache
/// in the child, unmapping those above the cache's size (a script thread's 64 MiB stack always):
/// `pthread_detach` (dropping a handle) or `pthread_join` on one of them then reads unmapped
/// memory, and the child died of SIGSEGV (about 1 fork in 5 while script threads started and
/// ended). So in another process a handle is left alone when dropped, and joining it returns
/// at once, as for a thread that has ended.
pub(crate) struct Handle<T = ()> {
    native: nix::libc::pthread_t,
    packet: std::sync::Arc<Packet<T>>,
    id: u64,
    /// The process that started the thread.
    pid: u32,
}

impl<T> Handle<T> {
    /// Whether this process started the thread (false in a forked child).
    pub(crate) fn ours(&self) -> bool {
        self.pid == crate::rt::pid::current_pid()
    }

    /// The thread's id, as [`current_id`] gives it on that thread.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the thread to end and gives what it returned, or its panic; in a forked child,
    /// returns at once with an error (the thread is not there).
    pub(crate) fn join(self) -> std::thread::Result<T> {
        let this = std::mem::ManuallyDrop::new(self);
        if !this.ours() {
            return Err(Box::new("a thread of the parent process"));
        }
        // SAFETY: a thread of this process, joined once (the handle is consumed, not dropped).
        unsafe { nix::libc::pthread_join(this.native, std::ptr::null_mut()) };
        // SAFETY: taken once; the handle's other fields are plain data.
        let packet = unsafe { std::ptr::read(&this.packet) };
        match std::sync::Arc::into_inner(packet) {
            Some(packet) => packet
                .0
                .into_inner()
                .unwrap_or_else(|| Err(Box::new("the thread left no result"))),
            None => Err(Box::new("the thread left no result")),
        }
    }

    /// Whether the thread has ended (false in a forked child, whose copy of the thread's
    /// state never changes: ask [`Handle::ours`] first where that matters).
    pub(crate) fn is_finished(&self) -> bool {
        std::sync::Arc::strong_count(&self.packet) == 1
    }

    /// Whether the caller is this thread.
    pub(crate) fn is_current(&self) -> bool {
        current_id() == self.id
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        if self.ours() {
            // SAFETY: a thread of this process, neither joined nor detached before.
            unsafe { nix::libc::pthread_detach(self.native) };
        }
    }
}

/// How long a service thread ([`run_service`]) waits for more work before it ends.
const SERVICE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

type ServiceJob = (String, Box<dyn FnOnce() + Send>);

/// The service threads of this process: the idle ones, waiting for work, and the handles of
/// all of them (for [`retire_services`]).
struct Services {
    /// Bumped by [`retire_services`]: a thread of an older generation ends after its work.
    generation: u64,
    next_serial: u64,
    idle: Vec<(u64, crossbeam_channel::Sender<ServiceJob>)>,
    threads: Vec<(u64, Handle)>,
}

static SERVICES: std::sync::Mutex<Services> = std::sync::Mutex::new(Services {
    generation: 0,
    next_serial: 0,
    idle: Vec::new(),
    threads: Vec::new(),
});

/// The process whose service threads [`SERVICES`] lists: a forked child never touches the list
/// (its parent's threads are not there, and a lock one of them held would stay held), and
/// starts plain threads instead.
static SERVICES_OWNER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn services() -> Option<std::sync::MutexGuard<'static, Services>> {
    use std::sync::atomic::Ordering;
    let me = crate::rt::pid::current_pid();
    let owner = match SERVICES_OWNER.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => me,
        Err(owner) => owner,
    };
    (owner == me).then(|| SERVICES.lock().recover())
}

/// Runs `work` on one of parrun's service threads, named `name`: one that finished its last
/// work and waits for more, if there is one, else a new one, which then waits
/// [`SERVICE_WAIT`] for more before it ends. For work that runs no script code and leaves no
/// thread-local state behind (a fork pool's supervisor).
///
/// A new thread's first allocation sets up the allocator's heap for it, and after a fork has
/// given free memory back (`rt::fork`) that took a fresh 2 MiB huge page, zeroed by the kernel:
/// about 0.5 ms of every fork pool's start, on its critical path.
pub(crate) fn run_service(
    name: String,
    work: impl FnOnce() + Send + 'static,
) -> std::io::Result<Service> {
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        let _ = done_tx.send(());
    });
    let done = Service {
        done: done_rx,
        pid: crate::rt::pid::current_pid(),
    };
    let Some(mut services) = services() else {
        Builder::new().name(name).spawn(job)?;
        return Ok(done);
    };
    let mut job = (name, job);
    while let Some((_, idle)) = services.idle.pop() {
        // (An idle thread that has just given up waiting took itself off the list first.)
        match idle.send(job) {
            Ok(()) => return Ok(done),
            Err(e) => job = e.into_inner(),
        }
    }
    let serial = services.next_serial;
    services.next_serial += 1;
    let generation = services.generation;
    let (name, work) = job;
    let handle = Builder::new()
        .name(name)
        .spawn(move || serve(work, serial, generation))?;
    services.threads.push((serial, handle));
    Ok(done)
}

/// A service thread's life: its first work, then whatever comes while it waits.
fn serve(first: Box<dyn FnOnce() + Send>, serial: u64, generation: u64) {
    let mut work = first;
    loop {
        work();
        // Idle, it says so (`ps`, a debugger), not what it last did.
        set_os_name("parrun-idle");
        NAME.with(|n| *n.borrow_mut() = Some("parrun-idle".into()));
        let (tx, rx) = crossbeam_channel::bounded::<ServiceJob>(1);
        {
            let Some(mut services) = services() else {
                return;
            };
            if services.generation != generation {
                services.threads.retain(|(s, _)| *s != serial);
                return;
            }
            services.idle.push((serial, tx));
        }
        let next = match rx.recv_timeout(SERVICE_WAIT) {
            Ok(next) => next,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                let Some(mut services) = services() else {
                    return;
                };
                let before = services.idle.len();
                services.idle.retain(|(s, _)| *s != serial);
                if services.idle.len() < before {
                    // Off the list before anyone took it: nothing can come now. (Dropping its
                    // own handle detaches the thread.)
                    services.threads.retain(|(s, _)| *s != serial);
                    return;
                }
                drop(services);
                // Taken just now: the work is on its way.
                match rx.recv() {
                    Ok(next) => next,
                    Err(_) => return,
                }
            }
        };
        let (name, next_work) = next;
        set_os_name(&name);
        NAME.with(|n| *n.borrow_mut() = Some(name));
        work = next_work;
    }
}

/// Ends this process's idle service threads and waits for them (a library run leaves no
/// thread behind); one still at work ends when its work does.
pub(crate) fn retire_services() {
    let going: Vec<Handle> = {
        let Some(mut services) = services() else {
            return;
        };
        services.generation += 1;
        // Dropping their senders closes the channels they wait on: each returns.
        let idle: Vec<u64> = services.idle.drain(..).map(|(serial, _)| serial).collect();
        let (going, staying) = std::mem::take(&mut services.threads)
            .into_iter()
            .partition::<Vec<_>, _>(|(serial, _)| idle.contains(serial));
        services.threads = staying;
        going.into_iter().map(|(_, handle)| handle).collect()
    };
    for handle in going {
        let _ = handle.join();
    }
}

/// Work handed to a service thread ([`run_service`]): joined when it is done.
pub(crate) struct Service {
    done: crossbeam_channel::Receiver<()>,
    /// The process that handed it over.
    pid: u32,
}

impl Service {
    /// Waits until the work is done (at once in a forked child, where it is not running).
    pub(crate) fn join(self) {
        if self.pid == crate::rt::pid::current_pid() {
            let _ = self.done.recv();
        }
    }
}
