//! Pull-through caching in `berth serve`: the upstream rules (`--upstream PREFIX=URL`, or a
//! file of `[[upstream]]` tables).

use berth::proxy::{UpstreamRule, Upstreams};
use std::path::Path;

/// The upstream rules: those of the file (TOML `[[upstream]]` tables, a `*.json` file, or
/// JSON text), then the flags' `PREFIX=URL` pairs.
pub(crate) fn upstreams(file: Option<&Path>, pairs: &[String]) -> Result<Upstreams, String> {
    let from_file =
        crate::lifecycle::read_tables(file, "upstream", Upstreams::from_json, Upstreams::new)?;
    let mut rules = from_file.rules().to_vec();
    for pair in pairs {
        let (prefix, url) = pair
            .split_once('=')
            .ok_or_else(|| format!("--upstream {pair:?}: expected PREFIX=URL"))?;
        rules.push(UpstreamRule::new(prefix, url));
    }
    Upstreams::new(rules)
}

/// `berth mirror`: pre-fills each image (`NAME:TAG`, `NAME@DIGEST`) and says what it fetched.
pub(crate) async fn mirror<S: berth::Storage>(
    registry: &berth::Registry<S>,
    images: &[String],
    platforms: &[String],
) -> Result<(), String> {
    if registry.options().upstreams.is_empty() {
        return Err("berth mirror needs upstream rules (--upstream or --upstreams)".into());
    }
    for image in images {
        let (name, reference) = match image.split_once('@') {
            Some(split) => split,
            None => match image.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => (name, tag),
                _ => (image.as_str(), "latest"),
            },
        };
        let report = registry
            .mirror(name, reference, platforms)
            .await
            .map_err(|e| format!("mirroring {image}: {}", e.message()))?;
        println!(
            "{image}: {} manifests; fetched {} blobs ({} bytes), {} already cached",
            report.manifests, report.blobs_fetched, report.bytes_fetched, report.blobs_cached
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_from_a_file_and_the_flags() {
        let dir = std::env::temp_dir().join(format!("berth-upstreams-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let toml = dir.join("upstreams.toml");
        std::fs::write(
            &toml,
            "[[upstream]]\nprefix = \"hub\"\nnamespace = \"docker.io\"\n\
             urls = [\"https://registry-1.docker.io\"]\nrevalidate = \"1m\"\n",
        )
        .expect("written");
        let pairs = ["ghcr=https://ghcr.io".to_owned()];
        let upstreams = upstreams(Some(&toml), &pairs).expect("valid rules");
        assert_eq!(upstreams.rules().len(), 2);
        assert_eq!(upstreams.rule(0).revalidate, 60);
        assert_eq!(upstreams.rule(1).prefix, "ghcr");
        std::fs::write(&toml, "[[upstreams]]\nprefix = \"hub\"\n").expect("written");
        assert!(upstreams_err(&toml).contains("[[upstream]]"));
        assert!(super::upstreams(None, &["no-url".to_owned()]).is_err());
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    fn upstreams_err(path: &Path) -> String {
        upstreams(Some(path), &[]).expect_err("refused")
    }
}
