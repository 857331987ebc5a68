"""Images the backend cannot take, made into ones it can: the gateway's own download of URL images
(`fetch`), their fitting to the backend's limits (`plan`, `render`), tiling of extreme aspect ratios
(`tiles`) and the tiles' answers combined into one (`combine`), run by `stage.Fitting`."""
