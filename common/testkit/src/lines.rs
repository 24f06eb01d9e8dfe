//! Reading a child process's output line by line without blocking the test: a thread reads,
//! the test receives with a timeout, so a stuck child fails the test instead of hanging it.
//!
//! ```
//! use std::process::{Command, Stdio};
//! use std::time::Duration;
//!
//! let mut child = Command::new("echo").arg("ready").stdout(Stdio::piped()).spawn().unwrap();
//! let lines = bikeshare_testkit::lines::line_channel(child.stdout.take().unwrap());
//! assert_eq!(lines.recv_timeout(Duration::from_secs(10)).unwrap(), "ready");
//! child.wait().unwrap();
//! ```

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;

/// The lines of `output` (a child's stdout or stderr), as they come, from a thread. The channel
/// closes at the end of the output or at a read error; the thread stops when the receiver is
/// dropped.
pub fn line_channel<R: Read + Send + 'static>(output: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
