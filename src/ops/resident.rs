//! Hands back to the kernel the pages of p402's own read-only data that
//! only start-up reads.
//!
//! The binary carries data it reads once and keeps in another form: the
//! pair verifier's weights (23 MB, copied into ONNX Runtime's session),
//! the o200k tokenizer's table (3.6 MB of text, parsed into the
//! tokenizer's maps), the built-in catalog and the arena table. Once read,
//! their pages stay mapped and counted in p402's resident memory for its
//! whole life, though nothing reads them again.
//!
//! The executable's first segment (file offset 0, read-only) holds that
//! data, with the string constants and the unwinding tables. It is a
//! private mapping of the file that nothing can write, so dropping its
//! pages changes no byte a later read sees: a page read again comes back
//! from the page cache, in microseconds. (The file cannot change under a
//! running executable: writing it in place fails with `ETXTBSY`, and an
//! upgrade replaces it with a new file.)

/// Drops the resident pages of the executable's read-only segment. Called
/// once the models are loaded and once the tokenizer's table is read:
/// whichever comes last leaves only what requests read since.
pub fn release_read_only_data() {
    #[cfg(target_os = "linux")]
    if let Some((start, end)) = read_only_segment() {
        // SAFETY: the range is whole pages of a read-only private mapping
        // of the executable (checked in `read_only_segment`): advising the
        // kernel to drop them changes no byte a later read sees.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// The address range of the executable's read-only mapping at file offset
/// 0, from `/proc/self/maps`: `start-end r--p 00000000 dev inode path`.
/// Only a mapping with exactly those permissions qualifies: the segment
/// that is read-only after relocation (RELRO) holds written pages and is
/// at another offset.
#[cfg(target_os = "linux")]
fn read_only_segment() -> Option<(usize, usize)> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let (perms, offset) = (fields.next()?, fields.next()?);
        let path = fields.nth(2)?;
        if perms != "r--p" || usize::from_str_radix(offset, 16).ok()? != 0 {
            return None;
        }
        if std::path::Path::new(path) != exe {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (end > start).then_some((start, end))
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A string constant of this binary, in its read-only segment.
    static MARK: &str = "p402 read-only data mark: 8f1c7e2a";

    #[test]
    fn the_segment_is_found_and_reads_the_same_after_release() {
        let (start, end) = read_only_segment().expect("the executable's read-only segment");
        let at = MARK.as_ptr() as usize;
        assert!(
            (start..end).contains(&at),
            "{at:x} not in {start:x}-{end:x}"
        );
        let before: Vec<u8> = std::hint::black_box(MARK).bytes().collect();
        release_read_only_data();
        let after: Vec<u8> = std::hint::black_box(MARK).bytes().collect();
        assert_eq!(before, after);
        assert!(after.starts_with(b"p402"));
    }
}
