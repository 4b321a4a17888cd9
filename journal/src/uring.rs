//! The io_uring flush path (cargo feature `io-uring`): appended bytes are staged in
//! memory and, at a flush, written with `pwrite` SQEs linked to one `fdatasync`, so the
//! flush is a single submission and a single wait.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use io_uring::{IoUring, Probe, opcode, squeue, types};

/// Ring entries: enough for a flush's extents plus its fdatasync in one submission.
const RING_ENTRIES: u32 = 64;
/// Staged bytes beyond which they are written out with a plain `pwrite` (not synced), so
/// a writer that appends much between flushes never holds unbounded memory.
const STAGED_BYTES_MAX: usize = 8 << 20;
/// Writes per submission: one ring slot is kept for the fdatasync.
const EXTENTS_PER_SUBMISSION_MAX: usize = RING_ENTRIES as usize - 1;

/// Succeeds when the kernel lets this process set up a ring that can write and fsync.
pub fn probe() -> Result<(), String> {
    let ring = IoUring::new(RING_ENTRIES).map_err(|error| format!("io_uring_setup: {error}"))?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|error| format!("io_uring probe: {error}"))?;
    if !probe.is_supported(opcode::Write::CODE) || !probe.is_supported(opcode::Fsync::CODE) {
        return Err("kernel lacks IORING_OP_WRITE or IORING_OP_FSYNC".to_string());
    }
    Ok(())
}

struct Extent {
    offset: usize,
    data: Vec<u8>,
}

/// Bytes written since the last flush, by file offset, and the ring that flushes them.
pub struct StagedWriter {
    ring: IoUring,
    extents: Vec<Extent>,
    staged_bytes: usize,
}

impl StagedWriter {
    pub fn new() -> io::Result<StagedWriter> {
        Ok(StagedWriter { ring: IoUring::new(RING_ENTRIES)?, extents: Vec::new(), staged_bytes: 0 })
    }

    pub fn write(&mut self, file: &File, offset: usize, data: &[u8]) -> io::Result<()> {
        match self.extents.last_mut() {
            Some(last) if last.offset.checked_add(last.data.len()) == Some(offset) => {
                last.data.extend_from_slice(data);
            }
            _ => {
                if self.extents.len() == EXTENTS_PER_SUBMISSION_MAX {
                    self.write_out(file)?;
                }
                self.extents.push(Extent { offset, data: data.to_vec() });
            }
        }
        self.staged_bytes += data.len();
        if self.staged_bytes > STAGED_BYTES_MAX {
            self.write_out(file)?;
        }
        Ok(())
    }

    /// Writes the staged extents without syncing them.
    fn write_out(&mut self, file: &File) -> io::Result<()> {
        for extent in self.extents.drain(..) {
            file.write_all_at(&extent.data, extent.offset as u64)?;
        }
        self.staged_bytes = 0;
        Ok(())
    }

    /// pwrite every staged extent, linked to an fdatasync that runs only if they all
    /// succeeded, and waits for all of it.
    pub fn sync(&mut self, file: &File) -> io::Result<()> {
        let fd = types::Fd(file.as_raw_fd());
        let mut entries = Vec::with_capacity(self.extents.len() + 1);
        for extent in &self.extents {
            let length = u32::try_from(extent.data.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "staged extent exceeds u32"))?;
            let entry = opcode::Write::new(fd, extent.data.as_ptr(), length)
                .offset(extent.offset as u64)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(u64::from(length));
            entries.push(entry);
        }
        // user_data u64::MAX marks the fsync, whose result is 0 on success.
        entries.push(opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(u64::MAX));
        // SAFETY: every Write entry points into an extent buffer owned by `self.extents`,
        // which is neither dropped nor resized until all entries have completed below
        // (submit_and_wait waits for every one of them), and `file` outlives the call.
        unsafe {
            self.ring
                .submission()
                .push_multiple(&entries)
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        self.ring.submit_and_wait(entries.len())?;
        let mut failure = None;
        for completion in self.ring.completion() {
            let result = completion.result();
            let expected = if completion.user_data() == u64::MAX { 0 } else { completion.user_data() };
            if result < 0 {
                failure.get_or_insert(io::Error::from_raw_os_error(-result));
            } else if u64::try_from(result).ok() != Some(expected) {
                failure.get_or_insert(io::Error::new(io::ErrorKind::WriteZero, "short io_uring write"));
            }
        }
        self.extents.clear();
        self.staged_bytes = 0;
        failure.map_or(Ok(()), Err)
    }
}
