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

#[cfg(target_os = "linux")]
mod imp {
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
            let filled = &buf[..n as usize];
            let mut off = 0usize;
            // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
            while off + 19 <= filled.len() {
                let reclen = u16::from_ne_bytes([filled[off + 16], filled[off + 17]]) as usize;
                if reclen == 0 || off + reclen > filled.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed directory entry",
                    ));
                }
                let raw = &filled[off + 19..off + reclen];
                let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                if let Ok(name) = std::str::from_utf8(&raw[..len]) {
                    if name != "." && name != ".." {
                        f(name);
                    }
                }
                off += reclen;
            }
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
}
