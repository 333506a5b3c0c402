//! `fanfare cluster status`: the nodes of a running `serve --cluster-listen`.

use anyhow::Context as _;
use fanfare_cluster::ClusterStatus;

use super::submit::Server;
use crate::args::ClientArgs;

pub async fn status(json: bool, client: &ClientArgs) -> anyhow::Result<bool> {
    let server = Server::new(client)?;
    let body = server
        .json(server.request(reqwest::Method::GET, "/v1/cluster"))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(true);
    }
    let status: ClusterStatus = serde_json::from_value(body)
        .context("the server's /v1/cluster answer could not be read")?;
    print!("{status}");
    Ok(true)
}
