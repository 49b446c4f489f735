//! Script output: one `print` is one `write(2)` on the raw descriptor.
//!
//! Lines from different threads (and, with fork, processes) therefore never mix within a line,
//! and no Rust-side lock is taken, so a forked child can print even if another thread held a
//! lock at the moment of the fork. C stdio (Lua's `io.write`) is flushed first so output stays in
//! program order.

use std::io;

/// Writes `text` followed by a newline to standard output in one call.
pub fn write_line(text: &[u8]) -> io::Result<()> {
    let mut line = Vec::with_capacity(text.len() + 1);
    line.extend_from_slice(text);
    line.push(b'\n');
    write_fd(1, &line)
}

/// Writes a message to standard error in one call (for reports such as "Exception in thread").
/// Silent while the process ends at once (a signal): nothing it says then is news.
pub fn write_stderr(text: &str) {
    if crate::fork::ending() {
        return;
    }
    let mut msg = text.to_owned();
    if !msg.ends_with('\n') {
        msg.push('\n');
    }
    // Nothing sensible can be done if stderr itself is gone.
    let _ = write_fd(2, msg.as_bytes());
}

fn write_fd(fd: i32, mut bytes: &[u8]) -> io::Result<()> {
    // SAFETY: fflush on the C library's own stdout stream; Lua's io library writes through it.
    unsafe {
        nix::libc::fflush(std::ptr::null_mut());
    }
    while !bytes.is_empty() {
        // SAFETY: writing an initialised slice to a descriptor we do not own or close.
        let n = unsafe { nix::libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}
