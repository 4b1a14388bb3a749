//! Real file systems for the tests of a stuck or a full disk: an ext4 image
//! on a loop device (which `fsfreeze` can stop), or a small tmpfs (which
//! fills up). Mounting needs root, as CI runs; elsewhere a test says it
//! did not run, and under CI (`CI` set) it fails instead, so that it can
//! never pass there without running.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted file system, thawed and unmounted when dropped (also when the
/// test fails, so no process is left blocked on it).
pub struct Disk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Disk {
    /// A 64 MiB ext4 file system on a loop device.
    pub fn ext4() -> Result<Disk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("disk.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let image_arg = image.display().to_string();
        let mount_arg = mount.display().to_string();
        run("truncate", &["-s", "64M", &image_arg])?;
        run("mkfs.ext4", &["-q", "-F", &image_arg])?;
        run("mount", &["-o", "loop", &image_arg, &mount_arg])?;
        Ok(Disk { mount, _dir: dir })
    }

    /// A tmpfs of `megabytes`.
    pub fn tmpfs(megabytes: u32) -> Result<Disk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let size = format!("size={megabytes}m");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &size,
                "tmpfs",
                &mount.display().to_string(),
            ],
        )?;
        Ok(Disk { mount, _dir: dir })
    }

    /// The disk, or `None` with a note where it cannot be mounted here;
    /// under CI a disk that cannot be mounted fails the test.
    pub fn or_skip(disk: Result<Disk, String>, test: &str) -> Option<Disk> {
        match disk {
            Ok(disk) => Some(disk),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("{test} must run under CI, but cannot mount its disk: {e}")
            }
            Err(e) => {
                eprintln!("{test} did not run: cannot mount its disk ({e}); it needs root");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }

    pub fn freeze(&self) {
        run("fsfreeze", &["-f", &self.mount.display().to_string()]).expect("fsfreeze -f");
    }

    pub fn thaw(&self) {
        let _ = run("fsfreeze", &["-u", &self.mount.display().to_string()]);
    }

    /// Fills every free byte with a file, and returns it: removing it
    /// frees the space again.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 64 << 10];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // The last partial block, byte by byte.
        while matches!(file.write(&block[..1]), Ok(1)) {}
        drop(file.sync_all());
        path
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.thaw();
        let _ = run("umount", &["-l", &self.mount.display().to_string()]);
    }
}
