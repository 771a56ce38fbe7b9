//! Random bytes from the operating system (`/dev/urandom`, the kernel's CSPRNG), for secrets and
//! password-file salts. Reading the device needs no crate and is what `getrandom` does on Linux
//! when the syscall is missing.

use std::io::Read;

/// `N` random bytes from the kernel.
pub fn bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_draws_of_32_bytes_differ() {
        let a = bytes::<32>().unwrap();
        let b = bytes::<32>().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0; 32]);
    }
}
