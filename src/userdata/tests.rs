use super::*;

const AL2023_MIME: &str = r#"MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="BOUNDARY"

--BOUNDARY
Content-Type: application/node.eks.aws

---
apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: prod
    apiServerEndpoint: https://example.eks.amazonaws.com
  kubelet:
    config:
      maxPods: 17

--BOUNDARY
Content-Type: text/x-shellscript; charset="us-ascii"

#!/bin/bash
echo hello   # keep my spacing

--BOUNDARY--
"#;

const AL2_SCRIPT: &str = r#"#!/bin/bash
set -ex
# /etc/eks/bootstrap.sh is called below
/etc/eks/bootstrap.sh prod \
  --b64-cluster-ca abc \
  --kubelet-extra-args '--node-labels=pool=web --max-pods=17' \
  --apiserver-endpoint https://example
echo done
"#;

const BOTTLEROCKET: &str = r#"# Bottlerocket settings
[settings.kubernetes]
cluster-name = "prod"   # the cluster
api-server = "https://example"

[settings.host-containers.admin]
enabled = true
"#;

fn set(data: &str, format: Option<UserDataFormat>, n: u32) -> Rewrite {
    set_max_pods(data.as_bytes(), format, n).expect("rewrite")
}

fn text(rewrite: &Rewrite) -> &str {
    std::str::from_utf8(&rewrite.data).expect("utf-8")
}

#[test]
fn detects_formats() {
    let cases = [
        (AL2023_MIME, Ok(UserDataFormat::Al2023)),
        (AL2_SCRIPT, Ok(UserDataFormat::Al2)),
        (BOTTLEROCKET, Ok(UserDataFormat::Bottlerocket)),
        (
            "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec: {}\n",
            Ok(UserDataFormat::Al2023),
        ),
        (
            "#!/bin/bash\necho nothing to see\n",
            Err(UserDataError::Unrecognised),
        ),
        ("", Err(UserDataError::Unrecognised)),
    ];
    for (data, want) in cases {
        assert_eq!(detect(data.as_bytes()), want, "{data}");
    }
    assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Err(UserDataError::Compressed));
    assert_eq!(detect(&[0xff, 0xfe, 0x00]), Err(UserDataError::NotText));
}

#[test]
fn al2023_adds_an_owned_part_last_and_keeps_the_rest() {
    let out = set(AL2023_MIME, None, 110);
    assert_eq!(out.format, UserDataFormat::Al2023);
    assert_eq!(out.previous_max_pods, Some(17));
    assert!(out.changed);
    let t = text(&out);
    let owned_at = t.find("X-Managed-By: vpc-cni-tuner").expect("owned part");
    // Everything before the closing boundary of the input is byte-identical.
    let original_body = AL2023_MIME.trim_end_matches("--BOUNDARY--\n");
    assert!(t.starts_with(original_body));
    assert!(owned_at > original_body.len() - 1);
    assert!(t.ends_with("      maxPods: 110\n--BOUNDARY--\n"), "{t}");
    assert_eq!(
        read_max_pods(&out.data, UserDataFormat::Al2023),
        Ok(Some(110))
    );
    // Twice changes nothing; another value replaces the owned part instead of adding one.
    let again = set(t, None, 110);
    assert!(!again.changed);
    let other = set(t, None, 58);
    assert_eq!(text(&other).matches("X-Managed-By").count(), 1);
    assert_eq!(
        read_max_pods(&other.data, UserDataFormat::Al2023),
        Ok(Some(58))
    );
    assert!(text(&other).starts_with(original_body));
}

/// [`AL2023_MIME`] with its headers folded (RFC 5322), as cloud-init accepts them: the
/// boundary parameter and a part's content type on continuation lines.
const AL2023_FOLDED: &str = "MIME-Version: 1.0\nContent-Type: multipart/mixed;\n\tboundary=\"BOUNDARY\"\n\n\
--BOUNDARY\nContent-Type:\n application/node.eks.aws\n\n---\napiVersion: node.eks.aws/v1alpha1\n\
kind: NodeConfig\nspec:\n  kubelet:\n    config:\n      maxPods: 17\n\n--BOUNDARY--\n";

#[test]
fn al2023_folded_headers_are_read_and_kept() {
    assert_eq!(detect(AL2023_FOLDED.as_bytes()), Ok(UserDataFormat::Al2023));
    assert_eq!(
        read_max_pods(AL2023_FOLDED.as_bytes(), UserDataFormat::Al2023),
        Ok(Some(17))
    );
    let out = set(AL2023_FOLDED, None, 110);
    assert_eq!(out.previous_max_pods, Some(17));
    let t = text(&out);
    // The folded headers stay byte for byte; the owned part goes last.
    assert!(
        t.starts_with(AL2023_FOLDED.trim_end_matches("--BOUNDARY--\n")),
        "{t}"
    );
    assert_eq!(
        read_max_pods(&out.data, UserDataFormat::Al2023),
        Ok(Some(110))
    );
    assert!(!set(t, None, 110).changed);
}

/// The start of kOps' nodeup script (kops: pkg/model/resources/nodeup.go), alone and as a MIME
/// part next to additional user data.
const KOPS_NODEUP: &str = "#!/bin/bash\nset -o errexit\nset -o nounset\nset -o pipefail\n\n\
NODEUP_URL_AMD64=https://artifacts.k8s.io/binaries/kops/1.34.0/linux/amd64/nodeup\n\
NODEUP_HASH_AMD64=f46b20a6\nNODEUP_URL_ARM64=\nNODEUP_HASH_ARM64=\n\nexport AWS_REGION=us-west-1\n";

/// Found by the fuzzer from the folded-header seed: a boundary ending in a CR (inside the
/// quotes) was accepted, and the delimiter the rewrite wrote could never be read back.
#[test]
fn boundaries_outside_rfc_2046_are_not_multipart() {
    let data = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"====\r\"\n\
                B\r\n--====\r\nContent-Type: text/x-shellscript\r\n\r\n#!/bin/bash\r\n";
    assert_eq!(detect(data.as_bytes()), Err(UserDataError::Unrecognised));
    if let Ok(rewrite) = set_max_pods(data.as_bytes(), Some(UserDataFormat::Al2023), 110) {
        assert_eq!(
            read_max_pods(&rewrite.data, UserDataFormat::Al2023),
            Ok(Some(110))
        );
    }
    let document = |boundary: &str| {
        format!(
            "Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n--{boundary}\n\
             Content-Type: application/node.eks.aws\n\nkind: NodeConfig\n--{boundary}--\n"
        )
    };
    for good in ["B", "==B==", "a'()+_,-./:=? b", &"b".repeat(70)] {
        assert_eq!(
            detect(document(good).as_bytes()),
            Ok(UserDataFormat::Al2023),
            "{good:?}"
        );
    }
    for bad in ["x ", "a\tb", "a\rb", "a;b", &"b".repeat(71)] {
        assert_eq!(
            detect(document(bad).as_bytes()),
            Err(UserDataError::Unrecognised),
            "{bad:?}"
        );
    }
}

/// The fuzz target's invariant over the committed seeds (fuzz/seeds/user_data: folded headers and
/// the inputs the fuzzer once failed on): no panic, and a rewrite reads back and is idempotent.
#[test]
fn fuzz_seeds_hold_the_fuzz_invariant() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/user_data");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("seeds") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("seed");
        let _ = detect(&data);
        for format in [
            UserDataFormat::Al2023,
            UserDataFormat::Al2,
            UserDataFormat::Bottlerocket,
        ] {
            let _ = read_max_pods(&data, format);
            if let Ok(rewrite) = set_max_pods(&data, Some(format), 110) {
                assert_eq!(
                    read_max_pods(&rewrite.data, format),
                    Ok(Some(110)),
                    "{}",
                    path.display()
                );
                let again = set_max_pods(&rewrite.data, Some(format), 110).expect("twice");
                assert!(!again.changed, "{}", path.display());
            }
        }
        seen += 1;
    }
    assert!(seen >= 5, "{seen} seeds");
}

/// Found by the fuzzer: a bootstrap.sh call whose reader and writer disagree (an unbalanced
/// quote) is refused rather than rewritten into a document that does not read back.
#[test]
fn a_rewrite_that_would_not_read_back_is_refused() {
    let data =
        "eks/bootstrap.sh prN\"RADoYd\n\n-)Bhes-hellscB==mas/etc/eks/bootstrap.sh prN\"RADoYd\n";
    match set_max_pods(data.as_bytes(), Some(UserDataFormat::Al2), 110) {
        Ok(rewrite) => assert_eq!(
            read_max_pods(&rewrite.data, UserDataFormat::Al2),
            Ok(Some(110))
        ),
        Err(err) => assert!(matches!(err, UserDataError::Malformed { .. }), "{err}"),
    }
}

#[test]
fn kops_nodeup_is_named_not_unrecognised() {
    assert_eq!(detect(KOPS_NODEUP.as_bytes()), Err(UserDataError::Kops));
    let mime = format!(
        "Content-Type: multipart/mixed; boundary=\"B\"\nMIME-Version: 1.0\n\n--B\n\
         Content-Type: text/x-shellscript\nContent-Disposition: attachment; filename=\"nodeup.sh\"\n\n\
         {KOPS_NODEUP}\n--B\nContent-Type: text/x-shellscript\n\necho extra\n\n--B--\n"
    );
    assert_eq!(detect(mime.as_bytes()), Err(UserDataError::Kops));
    assert_eq!(
        set_max_pods(KOPS_NODEUP.as_bytes(), None, 110).map(|r| r.changed),
        Err(UserDataError::Kops)
    );
    // An AL2 script that only mentions the variable in a comment is still AL2.
    let al2 = format!("{AL2_SCRIPT}# NODEUP_URL_AMD64= is kOps'\n");
    assert_eq!(detect(al2.as_bytes()), Ok(UserDataFormat::Al2));
}

#[test]
fn al2023_plain_node_config_is_wrapped_with_the_original_as_first_part() {
    let plain = "---\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: prod\n";
    let out = set(plain, None, 110);
    let t = text(&out);
    assert!(t.starts_with("MIME-Version: 1.0\n"));
    assert!(t.contains(plain));
    assert_eq!(detect(&out.data), Ok(UserDataFormat::Al2023));
    assert_eq!(
        read_max_pods(&out.data, UserDataFormat::Al2023),
        Ok(Some(110))
    );
    assert!(!set(t, None, 110).changed);
}

#[test]
fn al2023_crlf_documents_stay_crlf() {
    let crlf = AL2023_MIME.replace('\n', "\r\n");
    let out = set(&crlf, None, 110);
    let t = text(&out);
    assert!(!t.replace("\r\n", "").contains('\n'), "mixed line endings");
    assert!(t.starts_with(crlf.trim_end_matches("--BOUNDARY--\r\n")));
}

#[test]
fn al2_sets_use_max_pods_and_replaces_the_existing_value() {
    let out = set(AL2_SCRIPT, None, 110);
    assert_eq!(out.previous_max_pods, Some(17));
    let t = text(&out);
    assert!(
        t.contains("/etc/eks/bootstrap.sh --use-max-pods false prod \\\n  --b64-cluster-ca abc"),
        "{t}"
    );
    assert!(
        t.contains("--kubelet-extra-args '--node-labels=pool=web --max-pods=110'"),
        "{t}"
    );
    assert_eq!(t.matches("--max-pods").count(), 1);
    assert!(t.starts_with("#!/bin/bash\nset -ex\n# /etc/eks/bootstrap.sh is called below\n"));
    assert!(t.ends_with("  --apiserver-endpoint https://example\necho done\n"));
    assert!(!set(t, None, 110).changed);
}

#[test]
fn al2_call_variants() {
    let cases = [
        (
            "#!/bin/bash\n/etc/eks/bootstrap.sh prod\n",
            "#!/bin/bash\n/etc/eks/bootstrap.sh --use-max-pods false --kubelet-extra-args '--max-pods=110' prod\n",
        ),
        (
            "#!/bin/bash\n/etc/eks/bootstrap.sh prod --use-max-pods true --kubelet-extra-args \"--max-pods 20 --v=2\"\n",
            "#!/bin/bash\n/etc/eks/bootstrap.sh prod --use-max-pods false --kubelet-extra-args \"--max-pods=110 --v=2\"\n",
        ),
        (
            "#!/bin/bash\nexec /etc/eks/bootstrap.sh prod --use-max-pods=false --kubelet-extra-args=--v=2 && echo ok\n",
            "#!/bin/bash\nexec /etc/eks/bootstrap.sh prod --use-max-pods=false --kubelet-extra-args='--v=2 --max-pods=110' && echo ok\n",
        ),
        (
            "#!/bin/bash\n/etc/eks/bootstrap.sh prod --kubelet-extra-args '--max-pods=5 --max-pods=7'\n",
            "#!/bin/bash\n/etc/eks/bootstrap.sh --use-max-pods false prod --kubelet-extra-args '--max-pods=110'\n",
        ),
    ];
    for (input, want) in cases {
        let out = set(input, Some(UserDataFormat::Al2), 110);
        assert_eq!(text(&out), want, "from {input}");
        assert_eq!(read_max_pods(&out.data, UserDataFormat::Al2), Ok(Some(110)));
        assert!(!set(text(&out), None, 110).changed, "{want}");
    }
}

#[test]
fn al2_inside_mime_rewrites_only_the_script_part() {
    let mime = format!(
        "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"==B==\"\n\n--==B==\n\
         Content-Type: text/cloud-config\n\npackages: [jq]\n\n--==B==\nContent-Type: text/x-shellscript\n\n\
         {AL2_SCRIPT}\n--==B==--\n"
    );
    let out = set(&mime, None, 29);
    assert_eq!(out.format, UserDataFormat::Al2);
    let t = text(&out);
    assert!(t.starts_with("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"==B==\"\n\n--==B==\nContent-Type: text/cloud-config\n\npackages: [jq]\n\n"));
    assert!(t.contains("--max-pods=29"));
    assert!(t.ends_with("echo done\n\n--==B==--\n"));
}

#[test]
fn bottlerocket_keeps_comments_and_formatting() {
    let out = set(BOTTLEROCKET, None, 110);
    assert_eq!(out.previous_max_pods, None);
    let t = text(&out);
    assert!(
        t.contains("cluster-name = \"prod\"   # the cluster\n"),
        "{t}"
    );
    assert!(t.contains("max-pods = 110"), "{t}");
    assert!(t.contains("[settings.host-containers.admin]\nenabled = true\n"));
    assert!(!set(t, None, 110).changed);
    let changed = set(t, None, 58);
    assert_eq!(
        read_max_pods(&changed.data, UserDataFormat::Bottlerocket),
        Ok(Some(58))
    );
    assert_eq!(text(&changed).replace("58", "110"), t);
}

#[test]
fn refuses_what_it_cannot_rewrite_safely() {
    assert_eq!(
        set_max_pods(&[0x1f, 0x8b, 8, 0, 0], None, 110),
        Err(UserDataError::Compressed)
    );
    assert!(matches!(
        set_max_pods(b"#!/bin/bash\necho hi\n", Some(UserDataFormat::Al2), 110),
        Err(UserDataError::Malformed { .. })
    ));
    let huge = format!(
        "#!/bin/bash\n/etc/eks/bootstrap.sh prod\n# {}\n",
        "x".repeat(USER_DATA_LIMIT)
    );
    assert!(matches!(
        set_max_pods(huge.as_bytes(), None, 110),
        Err(UserDataError::TooLarge { .. })
    ));
    assert!(matches!(
        set_max_pods(b"[settings\n", Some(UserDataFormat::Bottlerocket), 110),
        Err(UserDataError::Malformed { .. })
    ));
    let bad_yaml = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n--B\nContent-Type: application/node.eks.aws\n\n: : :\n--B--\n";
    assert!(matches!(
        set_max_pods(bad_yaml.as_bytes(), None, 110),
        Err(UserDataError::Malformed { .. })
    ));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn shell_line() -> impl Strategy<Value = String> {
        "[a-z =\"'$#-]{0,30}".prop_map(|s| format!("echo {s}"))
    }

    proptest! {
        /// Arbitrary bytes never panic any parser.
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..512), n in 1u32..1000) {
            let _ = detect(&data);
            for format in [UserDataFormat::Al2023, UserDataFormat::Al2, UserDataFormat::Bottlerocket] {
                let _ = read_max_pods(&data, format);
                let _ = set_max_pods(&data, Some(format), n);
            }
            let _ = set_max_pods(&data, None, n);
        }

        /// AL2023: every part the operator does not own comes back byte-identical, and applying
        /// twice changes nothing.
        #[test]
        fn al2023_round_trip(lines in proptest::collection::vec(shell_line(), 0..8), n in 1u32..1000, m in 1u32..1000) {
            let script = lines.join("\n");
            let input = format!(
                "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n--B\n\
                 Content-Type: text/x-shellscript\n\n#!/bin/bash\n{script}\n\n--B\n\
                 Content-Type: application/node.eks.aws\n\napiVersion: node.eks.aws/v1alpha1\n\
                 kind: NodeConfig\nspec:\n  cluster:\n    name: c\n\n--B--\n"
            );
            let first = set_max_pods(input.as_bytes(), None, n).expect("rewrite");
            let kept = input.trim_end_matches("--B--\n");
            prop_assert!(first.data.starts_with(kept.as_bytes()));
            let second = set_max_pods(&first.data, None, n).expect("rewrite");
            prop_assert!(!second.changed);
            let third = set_max_pods(&first.data, None, m).expect("rewrite");
            prop_assert!(third.data.starts_with(kept.as_bytes()));
            prop_assert_eq!(read_max_pods(&third.data, UserDataFormat::Al2023), Ok(Some(m)));
        }

        /// AL2: lines other than the bootstrap call come back unchanged; twice is a no-op.
        #[test]
        fn al2_round_trip(before in proptest::collection::vec(shell_line(), 0..5), after in proptest::collection::vec(shell_line(), 0..5), n in 1u32..1000) {
            let input = format!("#!/bin/bash\n{}\n/etc/eks/bootstrap.sh c --kubelet-extra-args '--v=2'\n{}\n", before.join("\n"), after.join("\n"));
            let first = set_max_pods(input.as_bytes(), Some(UserDataFormat::Al2), n).expect("rewrite");
            let out = String::from_utf8(first.data.clone()).expect("utf-8");
            let changed: Vec<_> = input.lines().zip(out.lines()).filter(|(a, b)| a != b).collect();
            prop_assert_eq!(changed.len(), 1);
            prop_assert_eq!(input.lines().count(), out.lines().count());
            prop_assert!(!set_max_pods(&first.data, None, n).expect("rewrite").changed);
            prop_assert_eq!(read_max_pods(&first.data, UserDataFormat::Al2), Ok(Some(n)));
        }

        /// Bottlerocket: the other settings survive; twice is a no-op.
        #[test]
        fn bottlerocket_round_trip(name in "[a-z]{1,12}", n in 1u32..1000) {
            let input = format!("[settings.kubernetes]\ncluster-name = \"{name}\" # c\n\n[settings.ntp]\ntime-servers = [\"a\"]\n");
            let first = set_max_pods(input.as_bytes(), None, n).expect("rewrite");
            let out = String::from_utf8(first.data.clone()).expect("utf-8");
            let expected_name = format!("cluster-name = \"{name}\" # c");
            prop_assert!(out.contains(&expected_name));
            prop_assert!(out.contains("[settings.ntp]\ntime-servers = [\"a\"]\n"));
            prop_assert!(!set_max_pods(&first.data, None, n).expect("rewrite").changed);
        }
    }
}
