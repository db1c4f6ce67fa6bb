"""Initial schema: the tables of the models before migrations existed

Databases made before migrations existed are at this revision (:data:`vo.db.migrate.BASELINE`).

Revision ID: 0001
Revises: -
Create Date: 2026-11-21 15:32:26.156592
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('catalog_excerpts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('catalog', sa.String(length=32), nullable=False),
    sa.Column('nside', sa.Integer(), nullable=False),
    sa.Column('ordering', sa.String(length=8), nullable=False),
    sa.Column('tile', sa.BigInteger(), nullable=False),
    sa.Column('n_stars', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('ra', sa.Float(precision=53), nullable=False),
    sa.Column('dec', sa.Float(precision=53), nullable=False),
    sa.Column('healpix', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('n_stars IS NULL OR n_stars >= 0', name='ck_catalog_excerpts_n_stars_nonneg'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('catalog', 'nside', 'tile', name='uq_catalog_excerpts_tile')
    )
    op.create_index(op.f('ix_catalog_excerpts_healpix'), 'catalog_excerpts', ['healpix'], unique=False)
    op.create_table('exposures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('instrument', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('filter', sa.String(length=32), nullable=False),
    sa.Column('mjd', sa.Float(precision=53), nullable=False),
    sa.Column('exptime', sa.Float(precision=53), nullable=False),
    sa.Column('ra', sa.Float(precision=53), nullable=True),
    sa.Column('dec', sa.Float(precision=53), nullable=True),
    sa.Column('airmass', sa.Float(precision=53), nullable=True),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('airmass IS NULL OR airmass >= 0', name='ck_exposures_airmass_nonneg'),
    sa.CheckConstraint('exptime IS NULL OR exptime >= 0', name='ck_exposures_exptime_nonneg'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('instrument', 'name', name='uq_exposures_instrument_name')
    )
    op.create_index(op.f('ix_exposures_filter'), 'exposures', ['filter'], unique=False)
    op.create_index(op.f('ix_exposures_instrument'), 'exposures', ['instrument'], unique=False)
    op.create_index(op.f('ix_exposures_mjd'), 'exposures', ['mjd'], unique=False)
    op.create_index(op.f('ix_exposures_name'), 'exposures', ['name'], unique=False)
    op.create_table('object_counters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('next_counter', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('year', name='uq_object_counters_year')
    )
    op.create_table('provenances',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=64), nullable=False),
    sa.Column('obs', sa.String(length=32), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('code_version', sa.String(length=32), nullable=False),
    sa.Column('parameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('upstreams', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('git_commit', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('step', 'obs', 'hash', name='uq_provenances_step_obs_hash')
    )
    op.create_index(op.f('ix_provenances_hash'), 'provenances', ['hash'], unique=False)
    op.create_index(op.f('ix_provenances_step'), 'provenances', ['step'], unique=False)
    op.create_table('sources',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('project', sa.String(length=64), nullable=False),
    sa.Column('mag', sa.Float(precision=53), nullable=True),
    sa.Column('cat_row', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('ra', sa.Float(precision=53), nullable=False),
    sa.Column('dec', sa.Float(precision=53), nullable=False),
    sa.Column('healpix', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'project', name='uq_sources_name_project')
    )
    op.create_index(op.f('ix_sources_healpix'), 'sources', ['healpix'], unique=False)
    op.create_index(op.f('ix_sources_name'), 'sources', ['name'], unique=False)
    op.create_index(op.f('ix_sources_project'), 'sources', ['project'], unique=False)
    op.create_table('images',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('exposure_id', sa.Integer(), nullable=False),
    sa.Column('ccd', sa.String(length=32), nullable=False),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('nx', sa.Integer(), nullable=False),
    sa.Column('ny', sa.Integer(), nullable=False),
    sa.Column('pixel_scale', sa.Float(precision=53), nullable=True),
    sa.Column('ra_corner_1', sa.Float(precision=53), nullable=False),
    sa.Column('dec_corner_1', sa.Float(precision=53), nullable=False),
    sa.Column('ra_corner_2', sa.Float(precision=53), nullable=False),
    sa.Column('dec_corner_2', sa.Float(precision=53), nullable=False),
    sa.Column('ra_corner_3', sa.Float(precision=53), nullable=False),
    sa.Column('dec_corner_3', sa.Float(precision=53), nullable=False),
    sa.Column('ra_corner_4', sa.Float(precision=53), nullable=False),
    sa.Column('dec_corner_4', sa.Float(precision=53), nullable=False),
    sa.Column('wcs_solved', sa.Boolean(), nullable=False),
    sa.Column('fwhm_arcsec', sa.Float(precision=53), nullable=True),
    sa.Column('sky_level', sa.Float(precision=53), nullable=True),
    sa.Column('sky_rms', sa.Float(precision=53), nullable=True),
    sa.Column('saturation', sa.Float(precision=53), nullable=True),
    sa.Column('read_noise', sa.Float(precision=53), nullable=True),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('ra', sa.Float(precision=53), nullable=False),
    sa.Column('dec', sa.Float(precision=53), nullable=False),
    sa.Column('healpix', sa.BigInteger(), nullable=False),
    sa.Column('bad', sa.Boolean(), nullable=False),
    sa.Column('bad_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('fwhm_arcsec IS NULL OR fwhm_arcsec >= 0', name='ck_images_fwhm_arcsec_nonneg'),
    sa.CheckConstraint('nx IS NULL OR nx >= 0', name='ck_images_nx_nonneg'),
    sa.CheckConstraint('ny IS NULL OR ny >= 0', name='ck_images_ny_nonneg'),
    sa.CheckConstraint('sky_rms IS NULL OR sky_rms >= 0', name='ck_images_sky_rms_nonneg'),
    sa.ForeignKeyConstraint(['exposure_id'], ['exposures.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('exposure_id', 'ccd', 'provenance_id', name='uq_images_exposure_ccd_prov')
    )
    op.create_index(op.f('ix_images_bad'), 'images', ['bad'], unique=False)
    op.create_index(op.f('ix_images_exposure_id'), 'images', ['exposure_id'], unique=False)
    op.create_index(op.f('ix_images_healpix'), 'images', ['healpix'], unique=False)
    op.create_index(op.f('ix_images_provenance_id'), 'images', ['provenance_id'], unique=False)
    op.create_table('lightcurves',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=False),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('obs', sa.String(length=32), nullable=False),
    sa.Column('filter', sa.String(length=32), nullable=False),
    sa.Column('season', sa.Integer(), nullable=True),
    sa.Column('reduction_number', sa.Integer(), nullable=False),
    sa.Column('reduction_total', sa.Integer(), nullable=False),
    sa.Column('n_epochs', sa.Integer(), nullable=False),
    sa.Column('flux_mean', sa.Float(precision=53), nullable=True),
    sa.Column('flux_rms', sa.Float(precision=53), nullable=True),
    sa.Column('mag_mean', sa.Float(precision=53), nullable=True),
    sa.Column('mjd_start', sa.Float(precision=53), nullable=True),
    sa.Column('mjd_end', sa.Float(precision=53), nullable=True),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.ForeignKeyConstraint(['source_id'], ['sources.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('provenance_id', 'filename', 'filekey', name='uq_lightcurves_prov_file_key')
    )
    op.create_index(op.f('ix_lightcurves_provenance_id'), 'lightcurves', ['provenance_id'], unique=False)
    op.create_index(op.f('ix_lightcurves_source_id'), 'lightcurves', ['source_id'], unique=False)
    op.create_table('objects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('mjd_first', sa.Float(precision=53), nullable=False),
    sa.Column('ra', sa.Float(precision=53), nullable=False),
    sa.Column('dec', sa.Float(precision=53), nullable=False),
    sa.Column('healpix', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', name='uq_objects_name')
    )
    op.create_index(op.f('ix_objects_healpix'), 'objects', ['healpix'], unique=False)
    op.create_index(op.f('ix_objects_provenance_id'), 'objects', ['provenance_id'], unique=False)
    op.create_table('raw_photometry',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=False),
    sa.Column('obs', sa.String(length=32), nullable=False),
    sa.Column('n_rows', sa.Integer(), nullable=False),
    sa.Column('download_params_hash', sa.String(length=64), nullable=True),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['source_id'], ['sources.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source_id', 'obs', name='uq_raw_photometry_source_obs')
    )
    op.create_index(op.f('ix_raw_photometry_source_id'), 'raw_photometry', ['source_id'], unique=False)
    op.create_table('references',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('instrument', sa.String(length=32), nullable=False),
    sa.Column('field', sa.String(length=64), nullable=False),
    sa.Column('filter', sa.String(length=32), nullable=False),
    sa.Column('ccd', sa.String(length=32), nullable=False),
    sa.Column('n_images', sa.Integer(), nullable=False),
    sa.Column('zp', sa.Float(precision=53), nullable=True),
    sa.Column('fwhm', sa.Float(precision=53), nullable=True),
    sa.Column('limmag5', sa.Float(precision=53), nullable=True),
    sa.Column('mjd_start', sa.Float(precision=53), nullable=True),
    sa.Column('mjd_end', sa.Float(precision=53), nullable=True),
    sa.Column('nx', sa.Integer(), nullable=True),
    sa.Column('ny', sa.Integer(), nullable=True),
    sa.Column('ra', sa.Float(precision=53), nullable=True),
    sa.Column('dec', sa.Float(precision=53), nullable=True),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('bad', sa.Boolean(), nullable=False),
    sa.Column('bad_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('fwhm IS NULL OR fwhm >= 0', name='ck_references_fwhm_nonneg'),
    sa.CheckConstraint('n_images IS NULL OR n_images >= 0', name='ck_references_n_images_nonneg'),
    sa.CheckConstraint('nx IS NULL OR nx >= 0', name='ck_references_nx_nonneg'),
    sa.CheckConstraint('ny IS NULL OR ny >= 0', name='ck_references_ny_nonneg'),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('provenance_id', 'instrument', 'field', 'filter', 'ccd', name='uq_references_natural')
    )
    op.create_index(op.f('ix_references_bad'), 'references', ['bad'], unique=False)
    op.create_index(op.f('ix_references_field'), 'references', ['field'], unique=False)
    op.create_index(op.f('ix_references_filter'), 'references', ['filter'], unique=False)
    op.create_index(op.f('ix_references_instrument'), 'references', ['instrument'], unique=False)
    op.create_index(op.f('ix_references_provenance_id'), 'references', ['provenance_id'], unique=False)
    op.create_table('detections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=False),
    sa.Column('lightcurve_id', sa.Integer(), nullable=True),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('obs', sa.String(length=32), nullable=False),
    sa.Column('filter', sa.String(length=32), nullable=False),
    sa.Column('time_start', sa.Float(precision=53), nullable=True),
    sa.Column('time_peak', sa.Float(precision=53), nullable=False),
    sa.Column('time_end', sa.Float(precision=53), nullable=True),
    sa.Column('peak_snr', sa.Float(precision=53), nullable=True),
    sa.Column('peak_mag', sa.Float(precision=53), nullable=True),
    sa.Column('dmag', sa.Float(precision=53), nullable=True),
    sa.Column('n_epochs', sa.Integer(), nullable=True),
    sa.Column('simulated', sa.Boolean(), nullable=False),
    sa.Column('sim_type', sa.String(length=64), nullable=True),
    sa.Column('sim_params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['lightcurve_id'], ['lightcurves.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.ForeignKeyConstraint(['source_id'], ['sources.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('provenance_id', 'source_id', 'obs', 'filter', 'simulated', 'time_peak', name='uq_detections_natural')
    )
    op.create_index(op.f('ix_detections_lightcurve_id'), 'detections', ['lightcurve_id'], unique=False)
    op.create_index(op.f('ix_detections_provenance_id'), 'detections', ['provenance_id'], unique=False)
    op.create_index(op.f('ix_detections_simulated'), 'detections', ['simulated'], unique=False)
    op.create_index(op.f('ix_detections_source_id'), 'detections', ['source_id'], unique=False)
    op.create_table('source_lists',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('n_sources', sa.Integer(), nullable=False),
    sa.Column('fwhm', sa.Float(precision=53), nullable=True),
    sa.Column('aper_radius', sa.Float(precision=53), nullable=True),
    sa.Column('background_filename', sa.String(), nullable=True),
    sa.Column('background_checksum', sa.String(length=64), nullable=True),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('bad', sa.Boolean(), nullable=False),
    sa.Column('bad_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('fwhm IS NULL OR fwhm >= 0', name='ck_source_lists_fwhm_nonneg'),
    sa.CheckConstraint('n_sources IS NULL OR n_sources >= 0', name='ck_source_lists_n_sources_nonneg'),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('image_id', 'provenance_id', name='uq_source_lists_image_prov')
    )
    op.create_index(op.f('ix_source_lists_bad'), 'source_lists', ['bad'], unique=False)
    op.create_index(op.f('ix_source_lists_image_id'), 'source_lists', ['image_id'], unique=False)
    op.create_index(op.f('ix_source_lists_provenance_id'), 'source_lists', ['provenance_id'], unique=False)
    op.create_table('psfs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_list_id', sa.Integer(), nullable=False),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('fwhm', sa.Float(precision=53), nullable=True),
    sa.Column('n_stars', sa.Integer(), nullable=True),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('bad', sa.Boolean(), nullable=False),
    sa.Column('bad_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('fwhm IS NULL OR fwhm >= 0', name='ck_psfs_fwhm_nonneg'),
    sa.CheckConstraint('n_stars IS NULL OR n_stars >= 0', name='ck_psfs_n_stars_nonneg'),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.ForeignKeyConstraint(['source_list_id'], ['source_lists.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source_list_id', 'provenance_id', name='uq_psfs_sl_prov')
    )
    op.create_index(op.f('ix_psfs_bad'), 'psfs', ['bad'], unique=False)
    op.create_index(op.f('ix_psfs_provenance_id'), 'psfs', ['provenance_id'], unique=False)
    op.create_index(op.f('ix_psfs_source_list_id'), 'psfs', ['source_list_id'], unique=False)
    op.create_table('world_coordinates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_list_id', sa.Integer(), nullable=False),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('rms_arcsec', sa.Float(precision=53), nullable=True),
    sa.Column('n_stars', sa.Integer(), nullable=True),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('bad', sa.Boolean(), nullable=False),
    sa.Column('bad_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('n_stars IS NULL OR n_stars >= 0', name='ck_world_coordinates_n_stars_nonneg'),
    sa.CheckConstraint('rms_arcsec IS NULL OR rms_arcsec >= 0', name='ck_world_coordinates_rms_arcsec_nonneg'),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.ForeignKeyConstraint(['source_list_id'], ['source_lists.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source_list_id', 'provenance_id', name='uq_world_coordinates_sl_prov')
    )
    op.create_index(op.f('ix_world_coordinates_bad'), 'world_coordinates', ['bad'], unique=False)
    op.create_index(op.f('ix_world_coordinates_provenance_id'), 'world_coordinates', ['provenance_id'], unique=False)
    op.create_index(op.f('ix_world_coordinates_source_list_id'), 'world_coordinates', ['source_list_id'], unique=False)
    op.create_table('zero_points',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_list_id', sa.Integer(), nullable=False),
    sa.Column('world_coordinates_id', sa.Integer(), nullable=True),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('zp', sa.Float(precision=53), nullable=True),
    sa.Column('zp_err', sa.Float(precision=53), nullable=True),
    sa.Column('apcor', sa.Float(precision=53), nullable=True),
    sa.Column('limmag5', sa.Float(precision=53), nullable=True),
    sa.Column('n_stars', sa.Integer(), nullable=True),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('bad', sa.Boolean(), nullable=False),
    sa.Column('bad_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('n_stars IS NULL OR n_stars >= 0', name='ck_zero_points_n_stars_nonneg'),
    sa.CheckConstraint('zp_err IS NULL OR zp_err >= 0', name='ck_zero_points_zp_err_nonneg'),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.ForeignKeyConstraint(['source_list_id'], ['source_lists.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['world_coordinates_id'], ['world_coordinates.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source_list_id', 'provenance_id', name='uq_zero_points_sl_prov')
    )
    op.create_index(op.f('ix_zero_points_bad'), 'zero_points', ['bad'], unique=False)
    op.create_index(op.f('ix_zero_points_provenance_id'), 'zero_points', ['provenance_id'], unique=False)
    op.create_index(op.f('ix_zero_points_source_list_id'), 'zero_points', ['source_list_id'], unique=False)
    op.create_index(op.f('ix_zero_points_world_coordinates_id'), 'zero_points', ['world_coordinates_id'], unique=False)
    op.create_table('subtractions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('reference_id', sa.Integer(), nullable=False),
    sa.Column('zero_point_id', sa.Integer(), nullable=True),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('fwhm', sa.Float(precision=53), nullable=True),
    sa.Column('noise_rms', sa.Float(precision=53), nullable=True),
    sa.Column('limmag5', sa.Float(precision=53), nullable=True),
    sa.Column('n_candidates', sa.Integer(), nullable=True),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('bad', sa.Boolean(), nullable=False),
    sa.Column('bad_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('fwhm IS NULL OR fwhm >= 0', name='ck_subtractions_fwhm_nonneg'),
    sa.CheckConstraint('n_candidates IS NULL OR n_candidates >= 0', name='ck_subtractions_n_candidates_nonneg'),
    sa.CheckConstraint('noise_rms IS NULL OR noise_rms >= 0', name='ck_subtractions_noise_rms_nonneg'),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.ForeignKeyConstraint(['reference_id'], ['references.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['zero_point_id'], ['zero_points.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('image_id', 'reference_id', 'provenance_id', name='uq_subtractions_natural')
    )
    op.create_index(op.f('ix_subtractions_bad'), 'subtractions', ['bad'], unique=False)
    op.create_index(op.f('ix_subtractions_image_id'), 'subtractions', ['image_id'], unique=False)
    op.create_index(op.f('ix_subtractions_provenance_id'), 'subtractions', ['provenance_id'], unique=False)
    op.create_index(op.f('ix_subtractions_reference_id'), 'subtractions', ['reference_id'], unique=False)
    op.create_index(op.f('ix_subtractions_zero_point_id'), 'subtractions', ['zero_point_id'], unique=False)
    op.create_table('cutouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subtraction_id', sa.Integer(), nullable=False),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('n_cutouts', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('bad', sa.Boolean(), nullable=False),
    sa.Column('bad_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('n_cutouts IS NULL OR n_cutouts >= 0', name='ck_cutouts_n_cutouts_nonneg'),
    sa.CheckConstraint('size IS NULL OR size >= 0', name='ck_cutouts_size_nonneg'),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.ForeignKeyConstraint(['subtraction_id'], ['subtractions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('subtraction_id', 'provenance_id', name='uq_cutouts_sub_prov')
    )
    op.create_index(op.f('ix_cutouts_bad'), 'cutouts', ['bad'], unique=False)
    op.create_index(op.f('ix_cutouts_provenance_id'), 'cutouts', ['provenance_id'], unique=False)
    op.create_index(op.f('ix_cutouts_subtraction_id'), 'cutouts', ['subtraction_id'], unique=False)
    op.create_table('measurements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cutouts_id', sa.Integer(), nullable=False),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('row_index', sa.Integer(), nullable=False),
    sa.Column('object_id', sa.Integer(), nullable=True),
    sa.Column('mjd', sa.Float(precision=53), nullable=False),
    sa.Column('filter', sa.String(length=32), nullable=False),
    sa.Column('x', sa.Float(precision=53), nullable=True),
    sa.Column('y', sa.Float(precision=53), nullable=True),
    sa.Column('flux', sa.Float(precision=53), nullable=True),
    sa.Column('flux_err', sa.Float(precision=53), nullable=True),
    sa.Column('mag', sa.Float(precision=53), nullable=True),
    sa.Column('mag_err', sa.Float(precision=53), nullable=True),
    sa.Column('snr', sa.Float(precision=53), nullable=True),
    sa.Column('is_negative', sa.Boolean(), nullable=False),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('ra', sa.Float(precision=53), nullable=False),
    sa.Column('dec', sa.Float(precision=53), nullable=False),
    sa.Column('healpix', sa.BigInteger(), nullable=False),
    sa.Column('bad', sa.Boolean(), nullable=False),
    sa.Column('bad_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('flux_err IS NULL OR flux_err >= 0', name='ck_measurements_flux_err_nonneg'),
    sa.CheckConstraint('mag_err IS NULL OR mag_err >= 0', name='ck_measurements_mag_err_nonneg'),
    sa.ForeignKeyConstraint(['cutouts_id'], ['cutouts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cutouts_id', 'provenance_id', 'row_index', name='uq_measurements_natural')
    )
    op.create_index(op.f('ix_measurements_bad'), 'measurements', ['bad'], unique=False)
    op.create_index(op.f('ix_measurements_cutouts_id'), 'measurements', ['cutouts_id'], unique=False)
    op.create_index(op.f('ix_measurements_healpix'), 'measurements', ['healpix'], unique=False)
    op.create_index(op.f('ix_measurements_mjd'), 'measurements', ['mjd'], unique=False)
    op.create_index(op.f('ix_measurements_object_id'), 'measurements', ['object_id'], unique=False)
    op.create_index(op.f('ix_measurements_provenance_id'), 'measurements', ['provenance_id'], unique=False)
    op.create_table('scores',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('measurement_id', sa.Integer(), nullable=False),
    sa.Column('provenance_id', sa.Integer(), nullable=False),
    sa.Column('algorithm', sa.String(length=64), nullable=False),
    sa.Column('score', sa.Float(precision=53), nullable=False),
    sa.Column('filename', sa.String(), nullable=False),
    sa.Column('filekey', sa.String(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('score >= 0 AND score <= 1', name='ck_scores_score_range'),
    sa.ForeignKeyConstraint(['measurement_id'], ['measurements.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['provenance_id'], ['provenances.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('measurement_id', 'provenance_id', name='uq_scores_meas_prov')
    )
    op.create_index(op.f('ix_scores_measurement_id'), 'scores', ['measurement_id'], unique=False)
    op.create_index(op.f('ix_scores_provenance_id'), 'scores', ['provenance_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_scores_provenance_id'), table_name='scores')
    op.drop_index(op.f('ix_scores_measurement_id'), table_name='scores')
    op.drop_table('scores')
    op.drop_index(op.f('ix_measurements_provenance_id'), table_name='measurements')
    op.drop_index(op.f('ix_measurements_object_id'), table_name='measurements')
    op.drop_index(op.f('ix_measurements_mjd'), table_name='measurements')
    op.drop_index(op.f('ix_measurements_healpix'), table_name='measurements')
    op.drop_index(op.f('ix_measurements_cutouts_id'), table_name='measurements')
    op.drop_index(op.f('ix_measurements_bad'), table_name='measurements')
    op.drop_table('measurements')
    op.drop_index(op.f('ix_cutouts_subtraction_id'), table_name='cutouts')
    op.drop_index(op.f('ix_cutouts_provenance_id'), table_name='cutouts')
    op.drop_index(op.f('ix_cutouts_bad'), table_name='cutouts')
    op.drop_table('cutouts')
    op.drop_index(op.f('ix_subtractions_zero_point_id'), table_name='subtractions')
    op.drop_index(op.f('ix_subtractions_reference_id'), table_name='subtractions')
    op.drop_index(op.f('ix_subtractions_provenance_id'), table_name='subtractions')
    op.drop_index(op.f('ix_subtractions_image_id'), table_name='subtractions')
    op.drop_index(op.f('ix_subtractions_bad'), table_name='subtractions')
    op.drop_table('subtractions')
    op.drop_index(op.f('ix_zero_points_world_coordinates_id'), table_name='zero_points')
    op.drop_index(op.f('ix_zero_points_source_list_id'), table_name='zero_points')
    op.drop_index(op.f('ix_zero_points_provenance_id'), table_name='zero_points')
    op.drop_index(op.f('ix_zero_points_bad'), table_name='zero_points')
    op.drop_table('zero_points')
    op.drop_index(op.f('ix_world_coordinates_source_list_id'), table_name='world_coordinates')
    op.drop_index(op.f('ix_world_coordinates_provenance_id'), table_name='world_coordinates')
    op.drop_index(op.f('ix_world_coordinates_bad'), table_name='world_coordinates')
    op.drop_table('world_coordinates')
    op.drop_index(op.f('ix_psfs_source_list_id'), table_name='psfs')
    op.drop_index(op.f('ix_psfs_provenance_id'), table_name='psfs')
    op.drop_index(op.f('ix_psfs_bad'), table_name='psfs')
    op.drop_table('psfs')
    op.drop_index(op.f('ix_source_lists_provenance_id'), table_name='source_lists')
    op.drop_index(op.f('ix_source_lists_image_id'), table_name='source_lists')
    op.drop_index(op.f('ix_source_lists_bad'), table_name='source_lists')
    op.drop_table('source_lists')
    op.drop_index(op.f('ix_detections_source_id'), table_name='detections')
    op.drop_index(op.f('ix_detections_simulated'), table_name='detections')
    op.drop_index(op.f('ix_detections_provenance_id'), table_name='detections')
    op.drop_index(op.f('ix_detections_lightcurve_id'), table_name='detections')
    op.drop_table('detections')
    op.drop_index(op.f('ix_references_provenance_id'), table_name='references')
    op.drop_index(op.f('ix_references_instrument'), table_name='references')
    op.drop_index(op.f('ix_references_filter'), table_name='references')
    op.drop_index(op.f('ix_references_field'), table_name='references')
    op.drop_index(op.f('ix_references_bad'), table_name='references')
    op.drop_table('references')
    op.drop_index(op.f('ix_raw_photometry_source_id'), table_name='raw_photometry')
    op.drop_table('raw_photometry')
    op.drop_index(op.f('ix_objects_provenance_id'), table_name='objects')
    op.drop_index(op.f('ix_objects_healpix'), table_name='objects')
    op.drop_table('objects')
    op.drop_index(op.f('ix_lightcurves_source_id'), table_name='lightcurves')
    op.drop_index(op.f('ix_lightcurves_provenance_id'), table_name='lightcurves')
    op.drop_table('lightcurves')
    op.drop_index(op.f('ix_images_provenance_id'), table_name='images')
    op.drop_index(op.f('ix_images_healpix'), table_name='images')
    op.drop_index(op.f('ix_images_exposure_id'), table_name='images')
    op.drop_index(op.f('ix_images_bad'), table_name='images')
    op.drop_table('images')
    op.drop_index(op.f('ix_sources_project'), table_name='sources')
    op.drop_index(op.f('ix_sources_name'), table_name='sources')
    op.drop_index(op.f('ix_sources_healpix'), table_name='sources')
    op.drop_table('sources')
    op.drop_index(op.f('ix_provenances_step'), table_name='provenances')
    op.drop_index(op.f('ix_provenances_hash'), table_name='provenances')
    op.drop_table('provenances')
    op.drop_table('object_counters')
    op.drop_index(op.f('ix_exposures_name'), table_name='exposures')
    op.drop_index(op.f('ix_exposures_mjd'), table_name='exposures')
    op.drop_index(op.f('ix_exposures_instrument'), table_name='exposures')
    op.drop_index(op.f('ix_exposures_filter'), table_name='exposures')
    op.drop_table('exposures')
    op.drop_index(op.f('ix_catalog_excerpts_healpix'), table_name='catalog_excerpts')
    op.drop_table('catalog_excerpts')
