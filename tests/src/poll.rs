//! The one way a test waits for something to happen: ask again until the answer comes. The
//! deadline only turns a hang into a failure that says what never happened; it is not a
//! timing assertion, and nothing waits a fixed time in place of a condition.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits before it calls a condition that never held a failure.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The pause between two asks: short, so a test ends soon after its condition holds.
const PAUSE: Duration = Duration::from_millis(10);

/// Asks `probe` until it answers `Ok`, and returns that. Past [`PATIENCE`] it panics with
/// `what` never happened and the last `Err` it saw.
pub async fn until<T, E, Fut>(what: &str, mut probe: impl FnMut() -> Fut) -> T
where
    E: Debug,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe().await {
            Ok(answer) => return answer,
            Err(last) => {
                assert!(Instant::now() < deadline, "never {what}: {last:?}");
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}
