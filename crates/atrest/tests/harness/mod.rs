//! The runner shared by the test binaries that set up real servers once (harness = false):
//! runs named cases in order, each caught on panic, with an optional name filter as the
//! first argument; prints one line per case and `N passed, M failed`.

pub mod kms;

/// A named case over an environment `E`.
pub type Case<E> = (&'static str, fn(&E));

/// Runs `cases` against `env`; returns how many passed and failed.
pub fn run<E>(cases: &[Case<E>], env: &E) -> (usize, usize) {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let started = std::time::Instant::now();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(env))) {
            Ok(()) => {
                passed += 1;
                println!(
                    "test {name} ... ok ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    (passed, failed)
}
