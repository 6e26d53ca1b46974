/*
 * OHIF Viewer v3 configuration with the gateway as its DICOMweb data source.
 *
 * Serve OHIF's build (https://github.com/OHIF/Viewers, `yarn build`, or the
 * ohif/app image) and replace its app-config.js with this file, or point
 * APP_CONFIG at it. Change the three URLs if the gateway is not on
 * http://127.0.0.1:8080.
 *
 * The viewer runs on another origin than the gateway (here http://localhost:3000),
 * so the gateway must allow that origin for CORS, or the browser blocks every request:
 *
 *     DICOMWEB_GATEWAY_CORS_ORIGINS=http://localhost:3000 dicomweb-gateway demo
 *
 * (the `cors_origins` setting: a comma-separated list of origins; docs/configuration.md).
 * Serving OHIF and the gateway under one origin behind a reverse proxy avoids CORS.
 */
window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: true,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  maxNumRequests: {
    interaction: 100,
    thumbnail: 75,
    prefetch: 25,
  },
  defaultDataSourceName: 'dicomweb-gateway',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'dicomweb-gateway',
      configuration: {
        friendlyName: 'dicomweb-gateway',
        name: 'dicomweb-gateway',
        // QIDO-RS, WADO-RS and STOW-RS share the gateway's base_path (/dicomweb);
        // WADO-URI is at the server root (/wado).
        qidoRoot: 'http://127.0.0.1:8080/dicomweb',
        wadoRoot: 'http://127.0.0.1:8080/dicomweb',
        wadoUriRoot: 'http://127.0.0.1:8080/wado',
        // includefield=... is passed to the PACS's C-FIND as extra return keys.
        qidoSupportsIncludeField: true,
        // Literal matching only (fuzzymatching is answered with a Warning header);
        // * and ? wildcards are passed to the C-FIND.
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        // Frames from WADO-RS (.../frames/N, as stored or transcoded); thumbnails from
        // .../thumbnail (rendered by the gateway).
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        // Series metadata is fetched when a series is opened, not all at once.
        enableStudyLazyLoad: true,
        // /metadata gives Pixel Data and large values as BulkDataURIs the viewer fetches.
        bulkDataURI: {
          enabled: true,
          relativeResolution: 'studies',
        },
        // Accept: multipart/related; type=application/octet-stream (no quotes): what
        // OHIF's own default servers expect; the gateway takes both spellings.
        omitQuotationForMultipartRequest: true,
        singlepart: 'bulkdata,video',
        staticWado: false,
        supportsReject: false,
        dicomUploadEnabled: true, // STOW-RS from the study list
      },
    },
  ],
};
