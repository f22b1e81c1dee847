//! The `mesh` binary: see `mesh::cli`.

fn main() -> std::process::ExitCode {
    // Die quietly of SIGPIPE like other Unix tools (`mesh status | head`),
    // instead of panicking on the broken pipe.
    // SAFETY: called first thing, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    mesh::cli::main()
}
