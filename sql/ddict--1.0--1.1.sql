/* ddict--1.0--1.1.sql: hardening (see README, "Versions of the extension") */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "ALTER EXTENSION ddict UPDATE TO '1.1'" to load this file. \quit

