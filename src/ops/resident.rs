//! Hands back to the kernel the pages of p402's own read-only data that
//! only start-up reads, and of ONNX Runtime's library that loading it
//! touched.
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
//!
//! ONNX Runtime's library is the same case at a larger scale. Loading it
//! registers every kernel of every operator (a static initializer per
//! kernel, spread over its 17 MB of code), and building a session runs
//! the model parser and the graph optimizers; a lookup then runs the few
//! kernels of the cache's two small integer models. On a machine with
//! Linux 6.18, 18.6 MiB of the library stayed resident after loading
//! (14.0 MiB on the machine of issue 35's fourth part; how much of a
//! touched file the kernel maps in differs by kernel), enough on its own
//! to put p402 over its 150 MiB budget. So once the models are loaded,
//! the library's mappings that hold only the file's own bytes (the code,
//! the constants) are dropped the same way, and the pages a lookup runs
//! come back on the next one. A mapping holding any page written since it
//! was mapped, in memory or swapped out (the segment the loader
//! relocated, RELRO), is left alone.

/// Drops the resident pages of the executable's read-only segment. Called
/// once the models are loaded and once the tokenizer's table is read:
/// whichever comes last leaves only what requests read since.
pub fn release_read_only_data() {
    #[cfg(target_os = "linux")]
    if let Some((start, end)) = read_only_segment() {
        drop_pages(start, end);
    }
}

/// Drops the resident pages of ONNX Runtime's mappings that hold only the
/// file's bytes. Called only once the runtime is loaded: while the
/// dynamic loader maps a library it first reserves the whole span
/// read-only, then maps the writable segments over it, and a range read
/// in between would cover them.
pub fn release_runtime_pages() {
    #[cfg(target_os = "linux")]
    for (start, end) in runtime_mappings() {
        drop_pages(start, end);
    }
}

/// Advises the kernel to drop `start..end`, which must be whole pages of
/// a private file mapping that is not writable and holds no written page
/// (checked by the callers' `read_only_segment` and `unwritten_mappings`).
#[cfg(target_os = "linux")]
fn drop_pages(start: usize, end: usize) {
    // SAFETY: the range is whole pages of a private file mapping that is
    // not writable and holds no page written since it was mapped, in
    // memory or in swap: every page is the file's own, so dropping it
    // changes no byte a later read sees.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
    }
}

/// The address ranges of ONNX Runtime's mappings that hold only the
/// file's bytes, from `/proc/self/smaps`.
#[cfg(target_os = "linux")]
fn runtime_mappings() -> Vec<(usize, usize)> {
    std::fs::read_to_string("/proc/self/smaps")
        .map(|smaps| unwritten_mappings(&smaps, "libonnxruntime."))
        .unwrap_or_default()
}

/// In a `smaps` text, the private mappings of the library whose file name
/// starts with `library` that are not writable and hold no page written
/// since they were mapped: `Anonymous` (such pages in memory) and `Swap`
/// (such pages swapped out) both read 0 kB. A mapping whose fields lack
/// either is left out.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn unwritten_mappings(smaps: &str, library: &str) -> Vec<(usize, usize)> {
    /// A candidate mapping, and what its fields said so far.
    struct Mapping {
        range: (usize, usize),
        anonymous: Option<bool>,
        swap: Option<bool>,
    }
    let untouched = Some(true);
    let mut found = Vec::new();
    let mut current: Option<Mapping> = None;
    let mut finish = |mapping: Option<Mapping>| {
        if let Some(m) = mapping.filter(|m| m.anonymous == untouched && m.swap == untouched) {
            found.push(m.range);
        }
    };
    let zero = |value: &str| value.trim().strip_suffix("kB").map(str::trim) == Some("0");
    for line in smaps.lines() {
        if let Some(value) = line.strip_prefix("Anonymous:") {
            if let Some(m) = current.as_mut() {
                m.anonymous = Some(zero(value));
            }
            continue;
        }
        if let Some(value) = line.strip_prefix("Swap:") {
            if let Some(m) = current.as_mut() {
                m.swap = Some(zero(value));
            }
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            // A field line ("Rss: 12 kB"), not a mapping's header.
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // A new mapping: the one before is complete.
        finish(current.take());
        let path = fields.nth(3).unwrap_or("");
        let ours = std::path::Path::new(path)
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(library));
        current = (ours && perms.ends_with('p') && !perms.contains('w') && end > start).then_some(
            Mapping {
                range: (start, end),
                anonymous: None,
                swap: None,
            },
        );
    }
    finish(current);
    found
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

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn only_the_librarys_unwritten_mappings_are_dropped() {
        let smaps = "\
7f0000000000-7f00000a8000 r--p 00000000 fe:01 42  /opt/p402/libonnxruntime.so
Rss:                 672 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd mr mw me
7f00000a8000-7f0001124000 r-xp 000a8000 fe:01 42  /opt/p402/libonnxruntime.so
Rss:               15312 kB
Anonymous:             0 kB
Swap:                  0 kB
7f00014e2000-7f0001520000 r--p 014e2000 fe:01 42  /opt/p402/libonnxruntime.so
Rss:                 248 kB
Anonymous:           248 kB
Swap:                  0 kB
7f00014e2000-7f0001520000 r--p 01520000 fe:01 42  /opt/p402/libonnxruntime.so
Rss:                   0 kB
Anonymous:             0 kB
Swap:                 12 kB
7f0001520000-7f0001522000 rw-p 01522000 fe:01 42  /opt/p402/libonnxruntime.so
Anonymous:             8 kB
Swap:                  0 kB
7f0002000000-7f0002100000 r-xp 00000000 fe:01 43  /usr/lib/libc.so.6
Anonymous:             0 kB
Swap:                  0 kB
7f0003000000-7f0003100000 r--s 00000000 fe:01 44  /opt/p402/libonnxruntime.so
Anonymous:             0 kB
Swap:                  0 kB
7f0004000000-7f0004100000 r--p 00000000 fe:01 42  /opt/p402/libonnxruntime.so
Anonymous:             0 kB
";
        assert_eq!(
            unwritten_mappings(smaps, "libonnxruntime."),
            vec![
                (0x7f00_0000_0000, 0x7f00_000a_8000),
                (0x7f00_000a_8000, 0x7f00_0112_4000)
            ]
        );
        assert_eq!(unwritten_mappings("", "libonnxruntime."), vec![]);
    }
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
