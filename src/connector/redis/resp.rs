//! RESP2, the Redis wire protocol: requests as arrays of bulk strings, replies parsed
//! from a buffer that also counts the bytes it consumed (a replica's offset is the count
//! of replication-stream bytes processed). One [`Conn`] is one server connection, plain
//! TCP or TLS.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::RedisEndpoint;

/// A server reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Status(String),
    /// `-ERR …`.
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$n` (None: `$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*n` (None: `*-1`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text (status, bulk or integer).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Reply::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    /// The reply as bytes (bulk or status).
    pub fn bytes(self) -> Option<Vec<u8>> {
        match self {
            Reply::Bulk(b) => b,
            Reply::Status(s) => Some(s.into_bytes()),
            Reply::Int(i) => Some(i.to_string().into_bytes()),
            _ => None,
        }
    }

    /// The reply as an integer (an integer, or a bulk holding one).
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            Reply::Status(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The elements of an array reply (empty for a nil array or another reply).
    pub fn items(self) -> Vec<Reply> {
        match self {
            Reply::Array(Some(v)) => v,
            _ => Vec::new(),
        }
    }

    /// The server's error message, if this is one.
    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }
}

/// A protocol or I/O failure on a connection.
#[derive(Debug)]
pub enum RespError {
    /// The connection failed or closed.
    Io(std::io::Error),
    /// The peer sent something that is not RESP.
    Protocol(String),
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                f.write_str("the server closed the connection")
            }
            RespError::Io(e) => write!(f, "{e}"),
            RespError::Protocol(p) => write!(f, "protocol error: {p}"),
        }
    }
}

impl std::error::Error for RespError {}

impl From<std::io::Error> for RespError {
    fn from(e: std::io::Error) -> Self {
        RespError::Io(e)
    }
}

/// Encodes one request.
pub fn encode<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    header(out, b'*', args.len());
    for a in args {
        let a = a.as_ref();
        header(out, b'$', a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// `*N\r\n` or `$N\r\n`, without a formatter (a full resync encodes millions).
fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push(kind);
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// A request built from text and byte arguments.
#[macro_export]
macro_rules! redis_cmd {
    ($($a:expr),* $(,)?) => {{
        let v: Vec<Vec<u8>> = vec![$(AsRef::<[u8]>::as_ref(&$a).to_vec()),*];
        v
    }};
}

/// What a parse found: a whole reply and its length, or how many bytes at least must be
/// buffered before trying again.
enum Parsed {
    Done(Reply, usize),
    Need(usize),
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let i = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..i], at + i + 2))
}

fn number(l: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RespError::Protocol(format!("bad length {:?}", String::from_utf8_lossy(l))))
}

/// Parses one reply starting at `at`.
fn parse(buf: &[u8], at: usize, depth: usize) -> Result<Parsed, RespError> {
    if depth > 64 {
        return Err(RespError::Protocol("replies nested too deep".into()));
    }
    let Some(&t) = buf.get(at) else { return Ok(Parsed::Need(at + 1)) };
    let Some((l, next)) = line(buf, at + 1) else { return Ok(Parsed::Need(buf.len() + 1)) };
    match t {
        b'+' => Ok(Parsed::Done(Reply::Status(String::from_utf8_lossy(l).into_owned()), next)),
        b'-' => Ok(Parsed::Done(Reply::Error(String::from_utf8_lossy(l).into_owned()), next)),
        b':' => Ok(Parsed::Done(Reply::Int(number(l)?), next)),
        b'$' => {
            let n = number(l)?;
            if n < 0 {
                return Ok(Parsed::Done(Reply::Bulk(None), next));
            }
            let end = next + n as usize;
            if buf.len() < end + 2 {
                return Ok(Parsed::Need(end + 2));
            }
            Ok(Parsed::Done(Reply::Bulk(Some(buf[next..end].to_vec())), end + 2))
        }
        b'*' => {
            let n = number(l)?;
            if n < 0 {
                return Ok(Parsed::Done(Reply::Array(None), next));
            }
            let mut items = Vec::with_capacity((n as usize).min(4096));
            let mut pos = next;
            for _ in 0..n {
                match parse(buf, pos, depth + 1)? {
                    Parsed::Done(r, p) => {
                        items.push(r);
                        pos = p;
                    }
                    need => return Ok(need),
                }
            }
            Ok(Parsed::Done(Reply::Array(Some(items)), pos))
        }
        other => Err(RespError::Protocol(format!("unexpected reply type byte {other:#04x}"))),
    }
}

/// A byte stream a connection runs over: TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The reading side of a connection: a buffer over the stream that counts what it consumed.
pub struct Reader {
    io: ReadHalf<Box<dyn Io>>,
    buf: Vec<u8>,
    start: usize,
    /// Bytes consumed since the connection opened.
    pub consumed: u64,
}

impl Reader {
    /// A reader over a stream.
    pub fn over(io: Box<dyn Io>) -> Reader {
        let (r, _) = tokio::io::split(io);
        Reader { io: r, buf: Vec::with_capacity(64 * 1024), start: 0, consumed: 0 }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Reads more bytes from the stream (at least one).
    async fn fill(&mut self) -> Result<(), RespError> {
        if self.start > 0 && (self.start >= self.buf.len() / 2 || self.start == self.buf.len()) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // Reads into spare capacity: zero-filling a big buffer for each read (a socket
        // read returns some 64 KB) would cost more than the read itself.
        let want = (self.buf.len() - self.start).clamp(256 * 1024, 8 << 20);
        self.buf.reserve(want);
        let n = self.io.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(RespError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// Ensures at least `n` bytes are buffered.
    async fn want(&mut self, n: usize) -> Result<(), RespError> {
        while self.available().len() < n {
            self.fill().await?;
        }
        Ok(())
    }

    /// Consumes `n` buffered bytes.
    fn advance(&mut self, n: usize) {
        self.start += n;
        self.consumed += n as u64;
    }

    /// The next reply.
    pub async fn reply(&mut self) -> Result<Reply, RespError> {
        let mut need = 1;
        loop {
            if self.available().len() >= need {
                match parse(self.available(), 0, 0)? {
                    Parsed::Done(r, n) => {
                        self.advance(n);
                        return Ok(r);
                    }
                    Parsed::Need(n) => need = n,
                }
            }
            self.fill().await?;
        }
    }

    /// One line without its CRLF (a replica's handshake replies, the RDB's `$len`).
    pub async fn line(&mut self) -> Result<Vec<u8>, RespError> {
        loop {
            if let Some(i) = self.available().windows(2).position(|w| w == b"\r\n") {
                let l = self.available()[..i].to_vec();
                self.advance(i + 2);
                return Ok(l);
            }
            self.fill().await?;
        }
    }

    /// Skips newlines a master sends to keep a connection alive while it prepares an RDB.
    pub async fn skip_newlines(&mut self) -> Result<(), RespError> {
        loop {
            self.want(1).await?;
            if self.available()[0] == b'\n' {
                self.advance(1);
            } else {
                return Ok(());
            }
        }
    }

    /// Exactly `n` bytes.
    pub async fn exact(&mut self, n: usize) -> Result<Vec<u8>, RespError> {
        self.want(n).await?;
        let v = self.available()[..n].to_vec();
        self.advance(n);
        Ok(v)
    }

    /// Exactly `n` bytes appended to `out` (large values without a copy per chunk).
    pub async fn exact_into(&mut self, n: usize, out: &mut Vec<u8>) -> Result<(), RespError> {
        let mut left = n;
        out.reserve(n);
        while left > 0 {
            if self.available().is_empty() {
                self.fill().await?;
            }
            let take = left.min(self.available().len());
            out.extend_from_slice(&self.available()[..take]);
            self.advance(take);
            left -= take;
        }
        Ok(())
    }

    /// One byte.
    pub async fn byte(&mut self) -> Result<u8, RespError> {
        self.want(1).await?;
        let b = self.available()[0];
        self.advance(1);
        Ok(b)
    }

    /// Whether a whole reply is buffered already (no read needed).
    pub fn ready(&self) -> bool {
        matches!(parse(self.available(), 0, 0), Ok(Parsed::Done(..)))
    }
}

/// A connection to a server.
pub struct Conn {
    /// The reading side.
    pub r: Reader,
    /// The writing side.
    pub w: WriteHalf<Box<dyn Io>>,
}

impl Conn {
    /// Opens a connection (TLS for `rediss://`), without logging in.
    pub async fn open(ep: &RedisEndpoint) -> Result<Conn, RespError> {
        let addr = format!("{}:{}", ep.host, ep.port);
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&addr)).await.map_err(|_| {
            RespError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out after 10 s"))
        })??;
        tcp.set_nodelay(true).ok();
        let io: Box<dyn Io> = match &ep.tls {
            None => Box::new(tcp),
            Some(cfg) => {
                let name = rustls_pki_types::ServerName::try_from(ep.tls_name.clone())
                    .map_err(|e| RespError::Protocol(format!("TLS server name {:?}: {e}", ep.tls_name)))?;
                let conn = tokio_rustls::TlsConnector::from(Arc::clone(cfg));
                Box::new(conn.connect(name, tcp).await?)
            }
        };
        let (r, w) = tokio::io::split(io);
        Ok(Conn { r: Reader { io: r, buf: Vec::with_capacity(64 * 1024), start: 0, consumed: 0 }, w })
    }

    /// A plain TCP connection to `host:port` without logging in (tests and benches).
    pub async fn tcp(addr: &str) -> Result<Conn, RespError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true).ok();
        let io: Box<dyn Io> = Box::new(tcp);
        let (r, w) = tokio::io::split(io);
        Ok(Conn { r: Reader { io: r, buf: Vec::with_capacity(64 * 1024), start: 0, consumed: 0 }, w })
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), RespError> {
        self.w.write_all(bytes).await?;
        self.w.flush().await?;
        Ok(())
    }

    /// Sends one request and reads its reply.
    pub async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, RespError> {
        let mut out = Vec::new();
        encode(args, &mut out);
        self.send(&out).await?;
        self.r.reply().await
    }

    /// Sends requests at once and reads their replies in order.
    pub async fn pipeline(&mut self, reqs: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, RespError> {
        let mut out = Vec::new();
        for r in reqs {
            encode(r, &mut out);
        }
        self.send(&out).await?;
        let mut replies = Vec::with_capacity(reqs.len());
        for _ in reqs {
            replies.push(self.r.reply().await?);
        }
        Ok(replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_whole_or_ask_for_more() {
        let buf = b"*3\r\n$3\r\nfoo\r\n:42\r\n*2\r\n+OK\r\n$-1\r\n";
        let Ok(Parsed::Done(r, n)) = parse(buf, 0, 0) else { panic!("parses") };
        assert_eq!(n, buf.len());
        assert_eq!(
            r,
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"foo".to_vec())),
                Reply::Int(42),
                Reply::Array(Some(vec![Reply::Status("OK".into()), Reply::Bulk(None)]))
            ]))
        );
        assert!(matches!(parse(&buf[..12], 0, 0), Ok(Parsed::Need(_))));
        assert!(matches!(parse(b"$10\r\nabc", 0, 0), Ok(Parsed::Need(17))));
        assert!(parse(b"?x\r\n", 0, 0).is_err());
        let mut out = Vec::new();
        encode(&["SET", "k"], &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nSET\r\n$1\r\nk\r\n");
        out.clear();
        encode(&[vec![b'x'; 1230], Vec::new()], &mut out);
        assert!(out.starts_with(b"*2\r\n$1230\r\nxx") && out.ends_with(b"x\r\n$0\r\n\r\n"));
    }
}
