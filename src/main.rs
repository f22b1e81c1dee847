//! The `mesh` binary: see `mesh::cli`.

fn main() -> std::process::ExitCode {
    mesh::cli::main()
}
