//! Boxing a request's large futures (its handler, a remote attempt) without a copy on the stack.

use std::pin::Pin;

/// `Box::pin(value)`, but the box is allocated first and `value` is built straight into it.
/// `Box::pin` evaluates its argument before it allocates, so a future of several KiB (the edge's
/// request handler is about 4 KiB) is built on the stack and then copied over whole; here the
/// compiler writes it in place. callgrind, one worker, HTTP/1.1 to nginx: 337 fewer
/// instructions per request (about 1%) for the edge's handler alone.
#[inline(always)]
pub fn pin_boxed<T>(value: T) -> Pin<Box<T>> {
    Box::into_pin(Box::write(Box::new_uninit(), value))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_boxed_future_runs_as_it_would_unboxed() {
        let big = [7u8; 8192];
        let fut = super::pin_boxed(async move { big.iter().map(|&b| u32::from(b)).sum::<u32>() });
        assert_eq!(fut.await, 7 * 8192);
    }
}
