//! Directory scanning without a heap allocation per entry: the chunk directory holds one
//! file per chunk of every stream, so listing it is on the hot path of tail indexes and
//! stream readers.

use std::io;
use std::path::Path;

/// Calls `f` with the name of every entry of `dir` (`.` and `..` excluded). A missing
/// directory has no entries.
pub fn for_each_name(dir: &Path, mut f: impl FnMut(&str)) -> io::Result<()> {
    imp::scan(dir, &mut f)
}

/// An open directory whose files are opened relative to it (`openat`): no path walk
/// from the root for every chunk file.
pub struct DirHandle {
    #[cfg(target_os = "linux")]
    fd: std::fs::File,
    #[cfg(not(target_os = "linux"))]
    path: std::path::PathBuf,
}

impl DirHandle {
    pub fn open(dir: &Path) -> io::Result<DirHandle> {
        #[cfg(target_os = "linux")]
        {
            Ok(DirHandle {
                fd: std::fs::File::open(dir)?,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            Ok(DirHandle {
                path: dir.to_path_buf(),
            })
        }
    }

    /// Opens `name` (a plain file name) for reading.
    pub fn open_file(&self, name: &str) -> io::Result<std::fs::File> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::io::{AsRawFd, FromRawFd};
            if name.contains('/') || name.contains('\0') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a file name",
                ));
            }
            let c = std::ffi::CString::new(name)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
            // SAFETY: a valid directory fd we own and a NUL-terminated name; the returned fd
            // is checked and then owned by the File.
            let fd = unsafe {
                libc::openat(
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a freshly opened descriptor nobody else owns.
            Ok(unsafe { std::fs::File::from_raw_fd(fd) })
        }
        #[cfg(not(target_os = "linux"))]
        {
            std::fs::File::open(self.path.join(name))
        }
    }
}

/// Size of the fixed part of a `linux_dirent64` record:
/// `{ u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }`.
const DIRENT_HEADER: usize = 19;

/// Calls `f` with the name of every record of a `getdents64` buffer (`.` and `..` and
/// names that are not UTF-8 excluded). The kernel only returns whole, well-formed
/// records; anything else (a record length that does not cover its header or runs past
/// the buffer, a truncated header) is reported as `InvalidData`, never sliced past.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_records(buf: &[u8], f: &mut dyn FnMut(&str)) -> io::Result<()> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed directory entry");
    let mut rest = buf;
    while !rest.is_empty() {
        let header = rest.get(..DIRENT_HEADER).ok_or_else(malformed)?;
        let reclen = usize::from(u16::from_ne_bytes([header[16], header[17]]));
        if reclen < DIRENT_HEADER {
            return Err(malformed());
        }
        let record = rest.get(..reclen).ok_or_else(malformed)?;
        let raw = &record[DIRENT_HEADER..];
        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        if let Ok(name) = std::str::from_utf8(&raw[..len]) {
            if name != "." && name != ".." {
                f(name);
            }
        }
        rest = &rest[reclen..];
    }
    Ok(())
}

#[cfg(target_os = "linux")]
mod imp {
    use super::parse_records;
    use std::io;
    use std::os::unix::io::AsRawFd;
    use std::path::Path;

    pub fn scan(dir: &Path, f: &mut dyn FnMut(&str)) -> io::Result<()> {
        let file = match std::fs::File::open(dir) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`, which we own
            // and which outlives the call; the fd stays open for the whole loop.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    file.as_raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Ok(());
            }
            // The kernel never reports more than it was given room for; trust nothing else.
            let filled = usize::try_from(n)
                .ok()
                .and_then(|n| buf.get(..n))
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "getdents64 overran its buffer")
                })?;
            parse_records(filled, f)?;
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::path::Path;

    pub fn scan(dir: &Path, f: &mut dyn FnMut(&str)) -> io::Result<()> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in rd {
            if let Some(name) = entry?.file_name().to_str() {
                f(name);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_the_same_names_as_read_dir() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3000 {
            std::fs::write(dir.path().join(format!("f-{i:05}-é.bin")), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut ours = Vec::new();
        for_each_name(dir.path(), |n| ours.push(n.to_string())).unwrap();
        ours.sort();
        let mut std_names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        std_names.sort();
        assert_eq!(ours, std_names);
        let mut none = 0;
        for_each_name(&dir.path().join("missing"), |_| none += 1).unwrap();
        assert_eq!(none, 0);
    }
    /// A `linux_dirent64` record for `name`, padded to 8 bytes as the kernel does.
    fn record(name: &str, ino: u64) -> Vec<u8> {
        let reclen = (DIRENT_HEADER + name.len() + 1).div_ceil(8) * 8;
        let mut r = Vec::with_capacity(reclen);
        r.extend_from_slice(&ino.to_ne_bytes());
        r.extend_from_slice(&0i64.to_ne_bytes());
        r.extend_from_slice(&(reclen as u16).to_ne_bytes());
        r.push(8); // DT_REG
        r.extend_from_slice(name.as_bytes());
        r.resize(reclen, 0);
        r
    }

    fn parse(buf: &[u8]) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        parse_records(buf, &mut |n| names.push(n.to_string()))?;
        Ok(names)
    }

    #[test]
    fn record_lengths_shorter_than_the_header_are_rejected() {
        for reclen in [0u16, 1, 18] {
            let mut buf = record("a", 1);
            buf[16..18].copy_from_slice(&reclen.to_ne_bytes());
            assert_eq!(parse(&buf).unwrap_err().kind(), io::ErrorKind::InvalidData);
        }
    }

    #[test]
    fn records_running_past_the_buffer_or_truncated_headers_are_rejected() {
        let whole = record("name", 1);
        assert_eq!(
            parse(&whole[..whole.len() - 1]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut two = record("a", 1);
        two.extend_from_slice(&record("b", 2)[..10]);
        assert_eq!(parse(&two).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(parse(&[]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_header_only_record_has_an_empty_name() {
        let mut buf = vec![0u8; DIRENT_HEADER];
        buf[16..18].copy_from_slice(&(DIRENT_HEADER as u16).to_ne_bytes());
        assert_eq!(parse(&buf).unwrap(), vec![String::new()]);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&buf);
        }

        #[test]
        fn arbitrary_records_with_sane_headers_never_panic(
            recs in proptest::collection::vec(
                (0u16..64, proptest::collection::vec(proptest::num::u8::ANY, 0..64)),
                0..16,
            )
        ) {
            // Random lengths near the header size and random bodies: exercises the bounds
            // checks far more often than uniformly random bytes do.
            let mut buf = Vec::new();
            for (reclen, body) in recs {
                let mut h = vec![0u8; DIRENT_HEADER];
                h[16..18].copy_from_slice(&reclen.to_ne_bytes());
                buf.extend_from_slice(&h);
                buf.extend_from_slice(&body);
            }
            let _ = parse(&buf);
        }

        #[test]
        fn well_formed_records_round_trip(names in proptest::collection::vec("[^\\x00/]{1,40}", 0..40)) {
            let mut buf = Vec::new();
            for (i, n) in names.iter().enumerate() {
                buf.extend_from_slice(&record(n, i as u64 + 1));
            }
            let expected: Vec<String> = names
                .into_iter()
                .filter(|n| n != "." && n != "..")
                .collect();
            proptest::prop_assert_eq!(parse(&buf).unwrap(), expected);
        }
    }
}
