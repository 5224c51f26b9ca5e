//! Every read of stdin or of a file named on the command line is bounded
//! by the limit that applies, so that `< /dev/zero` ends with an error
//! naming the limit instead of growing until the kernel kills the process.

use std::io::{BufRead, Read};
use std::path::Path;

use crate::error::CliError;
use hightower_engine::Error;

/// Longest config file read (`--config`).
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;
/// Longest metadata file read (`auth user create --metadata-file`): the
/// auth service's limit.
pub const MAX_METADATA_FILE_BYTES: u64 = 16 << 10;
/// Longest line read for a secret: a password is at most 1024 bytes and a
/// token 55, so a longer line is a mistake (or `< /dev/zero`).
pub const MAX_SECRET_LINE_BYTES: usize = 4096;

/// All of `source` if it has at most `limit` bytes, else `None` (having read
/// `limit + 1` bytes, no more).
pub fn read_at_most(source: impl Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    source
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

/// The contents of the file at `path` (`-`: stdin), at most `limit` bytes;
/// `what` and `limit_name` name it and its limit in errors.
pub fn read_file_at_most(
    path: &Path,
    limit: u64,
    what: &str,
    limit_name: &str,
) -> Result<Vec<u8>, CliError> {
    let read = if path.as_os_str() == "-" {
        read_at_most(std::io::stdin().lock(), limit)
            .map_err(|source| Error::io(format!("read {what} from stdin"), source))?
    } else {
        let file = std::fs::File::open(path)
            .map_err(|source| Error::io(format!("open {what} {}", path.display()), source))?;
        read_at_most(file, limit)
            .map_err(|source| Error::io(format!("read {what} {}", path.display()), source))?
    };
    read.ok_or_else(|| {
        let from = if path.as_os_str() == "-" {
            "on stdin".to_string()
        } else {
            path.display().to_string()
        };
        CliError::Usage(format!(
            "{what} {from} is longer than the limit of {limit} bytes ({limit_name})"
        ))
    })
}

/// The next line of `source` without its line ending (LF or CRLF), at
/// most [`MAX_SECRET_LINE_BYTES`]; `None` at the end of input. `what`
/// names the secret in errors, which never contain the line.
pub fn secret_line(source: &mut impl BufRead, what: &str) -> Result<Option<String>, CliError> {
    let mut line = Vec::new();
    source
        .take(MAX_SECRET_LINE_BYTES as u64 + 2)
        .read_until(b'\n', &mut line)
        .map_err(|err| Error::io(format!("read the {what}"), err))?;
    if line.is_empty() {
        return Ok(None);
    }
    let ended = line.last() == Some(&b'\n');
    if ended {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > MAX_SECRET_LINE_BYTES {
        return Err(CliError::Usage(format!(
            "the {what} is longer than {MAX_SECRET_LINE_BYTES} bytes"
        )));
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| CliError::Usage(format!("the {what} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_one_byte_past_the_limit() {
        assert_eq!(read_at_most(&b"abc"[..], 3).unwrap(), Some(b"abc".to_vec()));
        assert_eq!(read_at_most(&b"abcd"[..], 3).unwrap(), None);
        // An endless source ends at limit + 1.
        let mut zeros = std::io::repeat(0).take(u64::MAX);
        assert_eq!(read_at_most(&mut zeros, 10).unwrap(), None);
        assert_eq!(zeros.limit(), u64::MAX - 11);
    }

    #[test]
    fn secret_lines_are_bounded_and_lose_their_ending() {
        let mut input = &b"one\r\ntwo\nthree"[..];
        let mut next = || secret_line(&mut input, "secret").unwrap();
        assert_eq!(next().as_deref(), Some("one"));
        assert_eq!(next().as_deref(), Some("two"));
        assert_eq!(next().as_deref(), Some("three"));
        assert_eq!(next(), None);

        let exactly = format!("{}\r\n", "x".repeat(MAX_SECRET_LINE_BYTES));
        let line = secret_line(&mut exactly.as_bytes(), "secret").unwrap();
        assert_eq!(line.map(|l| l.len()), Some(MAX_SECRET_LINE_BYTES));
        for over in [
            "x".repeat(MAX_SECRET_LINE_BYTES + 1),
            format!("{}\n", "x".repeat(MAX_SECRET_LINE_BYTES + 1)),
        ] {
            let err = secret_line(&mut over.as_bytes(), "password").unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("the password is longer than {MAX_SECRET_LINE_BYTES} bytes")
            );
        }
        let mut endless = std::io::BufReader::new(std::io::repeat(b'a'));
        assert!(secret_line(&mut endless, "token").is_err());
        let err = secret_line(&mut &b"\xff\n"[..], "token").unwrap_err();
        assert_eq!(err.to_string(), "the token is not UTF-8");
    }
}
